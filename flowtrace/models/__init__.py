"""Adapters and the one loader that picks an adapter from a checkpoint's config."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from flowtrace.errors import FlowtraceError, ModelError
from flowtrace.models.base import Adapter, LoadedModel, LoadOptions, Prepared
from flowtrace.models.checkpoint import (
    check_weights,
    quiet_transformers,
    read_config,
    resolve_file,
)
from flowtrace.models.hf_families import InternVLAdapter, LlavaOnevisionAdapter, VideoLlama3Adapter
from flowtrace.models.internvl_chat import InternVLChatAdapter
from flowtrace.models.llava_next_video import LlavaNextVideoAdapter
from flowtrace.models.lora import merge_lora
from flowtrace.models.pllava import PllavaAdapter
from flowtrace.models.qwen_vl import Qwen3VLAdapter, Qwen25VLAdapter

# Order matters only where two adapters could accept one config; each `accepts` is specific.
ADAPTERS: dict[str, type[Adapter]] = {
    cls.name: cls
    for cls in (
        PllavaAdapter,
        InternVLChatAdapter,
        LlavaNextVideoAdapter,
        Qwen25VLAdapter,
        Qwen3VLAdapter,
        LlavaOnevisionAdapter,
        InternVLAdapter,
        VideoLlama3Adapter,
    )
}
TOY = "toy"
PLANTED = "planted"  # the toy trained under planted routes (README: Planted routes)
# A Hugging Face Hub id, owner/name (a local folder that does not exist is not one).
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

__all__ = ["ADAPTERS", "Adapter", "LoadedModel", "Prepared", "load_model", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise FlowtraceError(f"device={device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise FlowtraceError(f"device={device}: this torch has no CUDA device; use device=cpu")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise FlowtraceError(f"dtype={dtype!r}: choose auto, {', '.join(choices)}")
    return choices[dtype]


def load_model(
    spec: str = TOY,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attn: str = "sdpa",
    adapter: str | None = None,
    pooling: tuple[int, int, int] | str | None = None,
    lora: str | None = None,
    weights: bool = True,
) -> LoadedModel:
    """Load `spec` (`toy`, `planted`, a local checkpoint folder or a Hugging Face id).

    The adapter is chosen from the checkpoint's config.json (never from its name); `adapter`
    forces one. `lora` is a PEFT adapter folder merged into the weights before tracing.
    `weights=False`: config.json's architecture with seeded random weights (revision "random").
    """
    from nnsight.modeling.transformers import TransformersModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # flowtrace shows its own progress

    from flowtrace.embedded import EMBEDDED_MODEL, EMBEDDED_PLANTED

    source = {TOY: str(EMBEDDED_MODEL), PLANTED: str(EMBEDDED_PLANTED)}.get(spec, spec)
    local = Path(source).expanduser()
    if not local.exists():
        check_hub_id(spec, source)
    if local.exists():
        source = str(local.resolve())
    if attn not in ("sdpa", "eager"):
        raise FlowtraceError(f"attn={attn!r}: choose sdpa or eager")
    raw = read_config(source)
    chosen = pick_adapter(raw, adapter, spec)  # a config no adapter reads fails first
    if weights:
        check_weights(source)  # a truncated, garbage or pickle file fails here, named
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    options = LoadOptions(str(torch_device), torch_dtype, attn, parse_pooling(pooling), weights)
    model, processor = chosen.load(source, options)
    if lora is not None:
        model = merge_lora(model, lora)
    # transformers' pipeline logs that our own classes are "not supported" for the task; they
    # run through nnsight all the same.
    with quiet_transformers(50):
        wrapped = TransformersModel(model, task="image-text-to-text", processor=processor)
    return LoadedModel(
        adapter=chosen,
        model=model,
        processor=processor,
        nnsight=wrapped,
        model_id=spec,
        revision=_revision(source, local if local.exists() else None) if weights else "random",
        device=torch_device,
        dtype=torch_dtype,
        attn=attn,
        num_layers=model.config.get_text_config().num_hidden_layers,
    )


def check_hub_id(spec: str, source: str) -> None:
    """Refuse a model that is no folder here and cannot be a Hub id. A path written as one
    (./, ../, /, ~, or under a folder that exists here) is said missing at once, instead of
    being tried on the Hub (which retries for about 20 s)."""
    written_as_path = source.startswith(("./", "../", "/", "~", ".\\")) or "\\" in source
    first = Path(source).parts[0] if Path(source).parts else ""
    if written_as_path or (first and "/" in source and Path(first).is_dir()):
        expanded = Path(source).expanduser()
        missing = expanded
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        # The missing part as the user wrote it (~ unexpanded), and the folders beside it.
        written = Path(source).parts
        first_missing = Path(*written[: len(written) - len(expanded.parts) + len(missing.parts)])
        folders = sorted(
            p.name for p in missing.parent.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        beside = ", ".join(folders[:8]) + (", …" if len(folders) > 8 else "")
        raise ModelError(
            f"model={spec}: no such folder: {first_missing} does not exist"
            + (f" (its folder holds {beside})" if folders else "")
            + "; check the path of the local checkpoint"
        )
    if not HUB_ID.match(source):
        raise ModelError(
            f"model={spec}: no such folder, and not a Hugging Face id (org/name); "
            "pass a local checkpoint folder, an id such as llava-hf/LLaVA-NeXT-Video-7B-hf, "
            "'toy' or 'planted'"
        )


def pick_adapter(config: dict, forced: str | None, spec: str) -> Adapter:
    """The adapter for a raw config.json: `forced` if given, else the one that accepts it.

    A forced adapter is refused where another adapter reads the config (the wrong family's
    prompt and token layout would give other numbers without a word); it serves configs no
    adapter reads (a fine-tune with a model_type of its own)."""
    model_type = config.get("model_type")
    reader = next((cls for cls in ADAPTERS.values() if cls.accepts(config)), None)
    if forced is not None:
        if forced not in ADAPTERS:
            raise FlowtraceError(f"adapter={forced}: choose one of {', '.join(ADAPTERS)}")
        if reader is not None and reader.name != forced:
            raise FlowtraceError(
                f"adapter={forced}: model={spec} is a {model_type!r} checkpoint, which the "
                f"{reader.name} adapter reads, not {forced} (it reads "
                f"{', '.join(ADAPTERS[forced].model_types)}); drop the adapter setting"
            )
        return ADAPTERS[forced]()
    if reader is not None:
        return reader()
    if config.get("auto_map"):
        raise FlowtraceError(
            f"model={spec}: model_type={model_type!r} ships its own modelling code (auto_map) "
            "that flowtrace does not run (it would need trust_remote_code) and no adapter reads "
            f"it (available: {', '.join(ADAPTERS)}); use the transformers-format checkpoint of "
            "this model, or force an adapter with adapter=NAME if its layout is one of ours"
        )
    raise FlowtraceError(
        f"model={spec}: its config says model_type={model_type!r}, which no adapter reads "
        f"(available: {', '.join(ADAPTERS)}); force one with adapter=NAME "
        "(`flowtrace models` lists what each reads)"
    )


def parse_pooling(pooling: tuple[int, int, int] | str | None) -> tuple[int, int, int] | None:
    """`8-12-12` -> (8, 12, 12)."""
    if pooling is None or isinstance(pooling, tuple):
        return pooling
    parts = pooling.replace("x", "-").split("-")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise FlowtraceError(f"pooling={pooling}: write T-H-W with positive integers, e.g. 8-12-12")
    return values  # type: ignore[return-value]


def _revision(source: str, local: Path | None) -> str:
    if local is None:
        # A Hub checkpoint: the cache's snapshot folder is named by the commit it resolved.
        return resolve_file(source, "config.json").parent.name
    # Hash small checkpoints so a store says exactly which weights made it; big ones by name only.
    weights = sorted(local.glob("*.safetensors"))
    if weights and sum(w.stat().st_size for w in weights) < 200 * 2**20:
        digest = hashlib.sha256()
        for w in weights:
            digest.update(w.read_bytes())
        return "sha256:" + digest.hexdigest()[:16]
    return "local:" + json.dumps([w.name for w in weights])
