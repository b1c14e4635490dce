"""`--lora PATH`: a PEFT LoRA adapter merged into the loaded model's weights.

Merging (rather than keeping PEFT's wrapper modules) leaves every module path and attention call
as the adapter declares them, so knockouts and probes run unchanged on the fine-tuned weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowtrace.errors import FlowtraceError
from flowtrace.models.checkpoint import check_safetensors, convert_command, load_bin


def merge_lora(model: Any, path: str) -> Any:
    """The model with the LoRA adapter at `path` merged in (PEFT's merge_and_unload)."""
    folder = Path(path).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise FlowtraceError(
            f"lora={path}: no adapter_config.json there; pass the folder PEFT's "
            "save_pretrained wrote (adapter_config.json + adapter_model.safetensors)"
        )
    check_lora_weights(folder, path)
    try:
        from peft import PeftModel
    except ImportError:
        raise FlowtraceError(
            "the lora setting needs the peft package: pip install 'flowtrace[lora]' (or pip "
            "install peft)"
        ) from None
    try:
        wrapped = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (ValueError, KeyError, RuntimeError) as err:
        raise FlowtraceError(
            f"lora={path}: PEFT could not apply it to this model ({_first_line(err)}); the "
            "adapter must be trained on this architecture (its target_modules must exist here)"
        ) from None
    merged = wrapped.merge_and_unload()
    return merged.eval()


def check_lora_weights(folder: Path, path: str) -> None:
    """Refuse a truncated safetensors file or a pickle of Python objects (which PEFT's safe
    loader stops with a bare UnpicklingError) before PEFT reads them, naming the file."""
    for file in sorted(folder.glob("adapter_model*.safetensors")):
        check_safetensors(file, path, param="lora")
    for file in sorted(folder.glob("adapter_model*.bin")):
        convert = convert_command(file.name, "adapter_model.safetensors")
        load_bin(file, path, mmap=True, param="lora", convert=convert)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
