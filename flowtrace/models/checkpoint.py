"""Reading checkpoints in their original key layout: raw config, weight files, strict loading.

Checkpoints that transformers has no class for (PLLaVA, InternVL chat) are loaded into our own
modules whose parameter names are the original ones, so no key conversion is needed and a missing
or extra tensor is an error, not a silently random weight.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from flowtrace.errors import ModelError


def resolve_file(source: str, name: str, required: bool = True) -> Path | None:
    """Path of `name` in a local folder or (through the HF cache) in a Hub repository."""
    local = Path(source)
    if local.is_dir():
        path = local / name
        if path.exists():
            return path
        if required:
            raise ModelError(f"model={source}: the folder has no {name}")
        return None
    from huggingface_hub.errors import LocalEntryNotFoundError
    from transformers.utils import cached_file

    try:
        # Missing entries raise too, so that "not there" and "Hub not reachable" differ.
        found = cached_file(source, name)
    except (OSError, ValueError) as err:
        if isinstance(err.__cause__, LocalEntryNotFoundError):
            raise ModelError(_unreachable(source, name)) from None
        if "does not appear to have a file named" not in str(err):
            raise ModelError(
                f"model={source}: could not fetch {name} ({_first_line(err)}); check the id, "
                "your network and HF_TOKEN, or download the checkpoint and pass its folder"
            ) from None
        found = None
    if found is None and required:
        raise ModelError(f"model={source}: the Hub repository has no {name}")
    return Path(found) if found else None


def _unreachable(source: str, name: str) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    why = "HF_HUB_OFFLINE is set" if offline else "no network, or the Hub is down"
    return (
        f"model={source}: could not reach the Hugging Face Hub for {name} ({why}) and it is not "
        "in the local cache. Download the checkpoint where there is network "
        f"(`hf download {source} --local-dir DIR`, or snapshot_download in Python) and pass "
        "that folder as the model"
    )


def read_config(source: str) -> dict[str, Any]:
    """The checkpoint's config.json as a plain dict (no class lookup, no remote code)."""
    path = resolve_file(source, "config.json")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"model={source}: config.json is not valid JSON ({err})") from None
    # json reads NaN and Infinity; a model built from them computes NaN everywhere, which
    # would read as every sample answered wrong.
    where = _non_finite(config)
    if where is not None:
        key, value = where
        raise ModelError(
            f"model={source}: config.json holds {value} at {key}; every number there must be "
            "finite: restore it from the original checkpoint's config.json"
        )
    return config


def _non_finite(value: Any, key: str = "") -> tuple[str, float] | None:
    """The first (key path, value) of a non-finite number in a parsed JSON value."""
    if isinstance(value, float) and not math.isfinite(value):
        return key or "the top level", value
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for name, item in items:
        found = _non_finite(item, f"{key}.{name}" if key else str(name))
        if found is not None:
            return found
    return None


def weight_files(source: str) -> list[Path]:
    """The checkpoint's safetensors (sharded or not), else its PyTorch .bin files."""
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = resolve_file(source, index_name, required=False)
        if index is not None:
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise ModelError(
                    f"model={source}: {index_name} is not a shard index ({_first_line(err)}); "
                    "it needs a weight_map of tensor names to shard files"
                ) from None
            return [resolve_file(source, shard) for shard in shards]
        path = resolve_file(source, single, required=False)
        if path is not None:
            return [path]
    local = Path(source)
    if local.is_dir():
        # The reference code also reads shards named model-0000x-of-…safetensors without an index.
        shards = sorted(local.glob("model-*.safetensors"))
        if shards:
            return shards
    held = ", ".join(sorted(p.name for p in local.iterdir())[:8]) if local.is_dir() else ""
    raise ModelError(
        f"model={source}: no weights found: looked for model.safetensors, "
        "model.safetensors.index.json, model-*.safetensors and pytorch_model.bin"
        + (f"; the folder holds {held}" if held else "; the folder is empty")
        + ". Point at the folder the checkpoint was downloaded or saved to"
    )


# A pickle checkpoint holds Python objects that loading would run; torch's safe loader refuses
# those, and flowtrace never unpickles them. Converting once (in an environment you trust) helps.
def convert_command(pickle_name: str, target: str) -> str:
    """How to turn the pickle `pickle_name` into the safetensors file `target`, as one line."""
    return (
        'convert it to safetensors once, where you trust the file: python -c "import torch; '
        "from safetensors.torch import save_file; "
        f"s = torch.load('{pickle_name}', weights_only=False); s = s.get('model', s); "
        "save_file({k: v.clone().contiguous() for k, v in s.items() if isinstance(v, "
        f"torch.Tensor)}}, '{target}')\" "
        "and remove the .bin"
    )


CONVERT = convert_command("pytorch_model.bin", "model.safetensors")


def check_weights(source: str) -> list[Path]:
    """The weight files of a local checkpoint, each readable: refuse a truncated or garbage
    safetensors file or a pickle that torch's safe loader cannot read, naming the file, before
    any model is built. Hub checkpoints are checked by the download."""
    if not Path(source).is_dir():
        return []
    files = weight_files(source)
    for path in files:
        if path.suffix == ".safetensors":
            check_safetensors(path, source)
        else:
            load_bin(path, source, mmap=True)
    return files


def check_safetensors(path: Path, source: str, param: str = "model") -> None:
    from safetensors import SafetensorError, safe_open

    size = path.stat().st_size if path.exists() else 0
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            handle.keys()
    except (SafetensorError, OSError) as err:
        raise ModelError(
            f"{param}={source}: {path.name} is not a readable safetensors file ({size} bytes: "
            f"{_first_line(err)}); it is truncated or not safetensors — download or save it again"
        ) from None


def load_bin(
    path: Path, source: str, mmap: bool = False, param: str = "model", convert: str = CONVERT
) -> Any:
    """A .bin's tensors through torch's safe loader; a pickle of Python objects or a damaged
    file is refused, naming `param` (model, lora) and how to convert it (`convert`)."""
    import pickle

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not mmap or "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except pickle.UnpicklingError:
        raise ModelError(
            f"{param}={source}: {path.name} is a pickle checkpoint holding Python objects beside "
            "its tensors; flowtrace does not unpickle them (loading would run code from the "
            f"file). {convert}"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ModelError(
            f"{param}={source}: {path.name} is not a readable PyTorch checkpoint "
            f"({_first_line(err)}); it is truncated or damaged — download or save it again"
        ) from None


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) over every weight file, one tensor in memory at a time for safetensors."""
    for path in files:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            check_safetensors(path, str(path.parent))
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    yield key, handle.get_tensor(key)
        else:
            state = load_bin(path, str(path.parent))
            # The reference code's checkpoints sometimes nest the weights under "model".
            state = state.get("model", state) if isinstance(state, dict) else state
            yield from state.items()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _no_init() -> contextlib.AbstractContextManager:
    # Skipping the random init makes building a 13B model take seconds instead of minutes; the
    # weights are all overwritten by the checkpoint (a missing one is an error below).
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers kept it in modeling_utils
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


@contextlib.contextmanager
def quiet_transformers(level: int = 40) -> Iterator[None]:
    """transformers' logs below `level` off (40: errors only; 50: also the pipeline's error
    that a class of ours is "not supported" for its task, which nnsight's wrapper triggers)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(level)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def load_tokenizer(source: str) -> Any:
    """The checkpoint's tokenizer, never running remote code (a fast tokenizer for offsets)."""
    from transformers import AutoTokenizer

    return load_processor(
        lambda: AutoTokenizer.from_pretrained(source, trust_remote_code=False), source, "tokenizer"
    )


def load_processor(factory: Callable[[], Any], source: str, what: str = "processor") -> Any:
    """`factory()` (a processor's or tokenizer's from_pretrained), its failure said as one line
    naming the checkpoint: a missing, truncated or foreign tokenizer file."""
    try:
        with quiet_transformers():
            return factory()
    except Exception as err:  # noqa: BLE001 - the tokenizers library raises bare Exception
        raise ModelError(
            f"model={source}: could not load its {what} ({_tokenizer_problem(source, err)}); "
            "flowtrace needs "
            "the checkpoint's fast tokenizer (tokenizer.json, as save_pretrained writes it) and "
            "runs no remote tokenizer code: copy the tokenizer files again from the original "
            "checkpoint"
        ) from None


# The files a processor or tokenizer reads, in the order a broken one is looked for.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)


def _tokenizer_problem(source: str, err: Exception) -> str:
    """Why a local checkpoint's processor did not load, by file where one is missing or not
    JSON (transformers' own message names neither)."""
    folder = Path(source)
    if folder.is_dir():
        for name in TOKENIZER_FILES:
            path = folder / name
            if not path.is_file():
                continue
            try:
                json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as bad:
                return f"{name} is not valid JSON: {_first_line(bad)}"
        if not (folder / "tokenizer.json").is_file():
            return "the folder has no tokenizer.json"
    return _first_line(err)


def build_empty(factory: Callable[[], torch.nn.Module], device: str, dtype: torch.dtype) -> Any:
    """The module built directly on `device` in `dtype`, parameters left uninitialised.

    Buffers computed in constructors (rotary frequencies, position ids) are real values.
    """
    floating = dtype if dtype.is_floating_point else torch.float32
    with torch.device(device), _default_dtype(floating), _no_init():
        return factory()


def load_strict(
    model: torch.nn.Module,
    tensors: Iterator[tuple[str, torch.Tensor]],
    source: str,
    rename: Callable[[str], str | None] = lambda key: key,
) -> None:
    """Copy every checkpoint tensor into the parameter of the same (renamed) name.

    `rename` maps an original key to the model's key, or None to skip a tensor the model does not
    use. Every parameter and persistent buffer must be found, weights tied to another (an LM
    head tied to the embeddings) excepted.
    """
    targets = model.state_dict(keep_vars=True)
    seen_storage: dict[int, str] = {}
    tied: set[str] = set()
    for key, value in targets.items():
        pointer = value.data_ptr()
        if pointer in seen_storage and value.numel():
            tied.add(key)
        else:
            seen_storage[pointer] = key
    loaded: set[str] = set()
    unexpected: list[str] = []
    with torch.no_grad():
        for original, tensor in tensors:
            key = rename(original)
            if key is None:
                continue
            target = targets.get(key)
            if target is None:
                unexpected.append(original)
                continue
            if tuple(target.shape) != tuple(tensor.shape):
                raise ModelError(
                    f"model={source}: weight {original} has shape {tuple(tensor.shape)}, the "
                    f"config implies {tuple(target.shape)}; config.json and weights disagree"
                )
            target.data.copy_(tensor)
            loaded.add(key)
    missing = sorted(set(targets) - loaded - tied)
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} weights (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown weights (e.g. {', '.join(unexpected[:3])})")
        raise ModelError(
            f"model={source}: checkpoint does not fit the architecture its config describes: "
            f"{'; '.join(parts)}. Is it the right adapter?"
        )


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@torch.no_grad()
def init_random(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Seeded random weights in place (benchmarks, dry runs): N(0, std) matrices, unit norms.

    Works on any device, so a full-size model built uninitialised on the GPU is filled there.
    """
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, param in model.named_parameters():
        if param.dim() == 1 and ("norm" in name or name.endswith(("ls1", "ls2", "lambda_1"))):
            param.fill_(1.0)
        elif param.dim() == 1:
            param.zero_()
        else:
            param.normal_(0.0, std, generator=generator)
    return model
