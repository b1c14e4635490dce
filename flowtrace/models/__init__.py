"""Adapters and the one loader that picks an adapter from a checkpoint's config."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from flowtrace.errors import FlowtraceError
from flowtrace.models.base import Adapter, LoadedModel, Prepared
from flowtrace.models.llava_next_video import LlavaNextVideoAdapter

ADAPTERS: dict[str, type[Adapter]] = {cls.name: cls for cls in (LlavaNextVideoAdapter,)}
TOY = "toy"
_HF_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

__all__ = ["ADAPTERS", "Adapter", "LoadedModel", "Prepared", "load_model", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise FlowtraceError(f"--device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise FlowtraceError(f"--device {device}: this torch has no CUDA device; use --device cpu")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise FlowtraceError(f"--dtype {dtype!r}: choose auto, {', '.join(choices)}")
    return choices[dtype]


def load_model(
    spec: str = TOY,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attn: str = "sdpa",
    adapter: str | None = None,
) -> LoadedModel:
    """Load `spec` (`toy`, a local checkpoint folder or a Hugging Face id) with its adapter."""
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # flowtrace shows its own progress

    from flowtrace.toy import EMBEDDED_MODEL

    source = str(EMBEDDED_MODEL) if spec == TOY else spec
    local = Path(source).expanduser()
    if not local.exists() and not _HF_ID.match(source):
        raise FlowtraceError(
            f"--model {spec}: no such folder, and not a Hugging Face id (org/name); "
            "pass a local checkpoint folder, an id such as llava-hf/LLaVA-NeXT-Video-7B-hf, "
            "or 'toy'"
        )
    if local.exists():
        source = str(local.resolve())
    if attn not in ("sdpa", "eager"):
        raise FlowtraceError(f"--attn {attn!r}: choose sdpa or eager")
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise FlowtraceError(
            f"--model {spec}: could not read its config ({_first_line(err)}); for a Hub id check "
            "the name, your network and HF_TOKEN, or download it and pass the local folder"
        ) from None
    chosen = _pick_adapter(config.model_type, adapter, spec)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    model, processor = chosen.load(source, device=str(torch_device), dtype=torch_dtype, attn=attn)
    wrapped = TransformersModel(model, task="image-text-to-text", processor=processor)
    text_config = config.get_text_config()
    return LoadedModel(
        adapter=chosen,
        model=model,
        processor=processor,
        nnsight=wrapped,
        model_id="toy" if spec == TOY else spec,
        revision=_revision(config, local if local.exists() else None),
        device=torch_device,
        dtype=torch_dtype,
        attn=attn,
        num_layers=text_config.num_hidden_layers,
    )


def _pick_adapter(model_type: str, forced: str | None, spec: str) -> Adapter:
    if forced is not None:
        if forced not in ADAPTERS:
            raise FlowtraceError(f"--adapter {forced}: choose one of {', '.join(ADAPTERS)}")
        return ADAPTERS[forced]()
    for cls in ADAPTERS.values():
        if model_type in cls.model_types:
            return cls()
    raise FlowtraceError(
        f"--model {spec}: its config says model_type={model_type!r}, which no adapter reads "
        f"(available: {', '.join(ADAPTERS)}); force one with --adapter NAME"
    )


def _revision(config: object, local: Path | None) -> str:
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return str(commit)
    if local is None:
        return "unknown"
    # Hash small checkpoints so a store says exactly which weights made it; big ones by name only.
    weights = sorted(local.glob("*.safetensors"))
    if weights and sum(w.stat().st_size for w in weights) < 200 * 2**20:
        digest = hashlib.sha256()
        for w in weights:
            digest.update(w.read_bytes())
        return "sha256:" + digest.hexdigest()[:16]
    return "local:" + json.dumps([w.name for w in weights])


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
