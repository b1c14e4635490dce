"""Inputs that once ran for minutes, crashed with a traceback or were silently accepted (issue
33), built from the tiny checkpoint and dataset of conftest.py; tests/test_errors.py runs them
through the CLI."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

LONG_QUESTION_WORDS = 20_000


def bad_input_paths(base: Path, model: Path, data: Path) -> dict[str, Path]:
    """Fixture paths by name: broken checkpoints, a pickled LoRA, an empty-edges recipe, a dataset
    with a 20,000-word question."""

    def model_copy(name: str) -> Path:
        folder = base / name
        shutil.copytree(model, folder)
        return folder

    found = {}
    no_tokenizer = model_copy("no_tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    broken = model_copy("broken_tokenizer")
    (broken / "tokenizer.json").write_text('{"version": "1.0", "model": ')  # cut short
    found |= {"no_tokenizer_model": no_tokenizer, "broken_tokenizer_model": broken}

    mismatch = model_copy("mismatch")  # the config of a wider MLP than the weights hold
    edit_config(mismatch, lambda c: c["text_config"].update(intermediate_size=200))
    nan_config = model_copy("nan_config")
    edit_config(nan_config, lambda c: c["text_config"].update(rms_norm_eps=float("nan")))
    found |= {"mismatch_model": mismatch, "nan_config_model": nan_config}

    from safetensors.torch import load_file, save_file

    nan_weight = model_copy("nan_weight")
    state = load_file(nan_weight / "model.safetensors")
    key = next(k for k in state if k.endswith("layers.0.self_attn.q_proj.weight"))
    state[key][0, 0] = float("nan")
    save_file(state, nan_weight / "model.safetensors", metadata={"format": "pt"})
    found["nan_weight_model"] = nan_weight

    found["pickle_lora"] = pickled_lora(model, base / "pickled_lora")
    empty = base / "empty_edges.py"
    empty.write_text('from flowtrace.recipe import Knockout\nrecipe = Knockout("e", "e", [])\n')
    found["empty_recipe"] = empty
    found["long_question_data"] = long_question_data(data, base / "long_question")
    return found


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))  # NaN is written as NaN, as json does


def pickled_lora(model: Path, out: Path) -> Path:
    """A PEFT LoRA folder whose adapter_model.bin pickles a Namespace beside its tensors."""
    import peft
    import torch
    from safetensors.torch import load_file
    from transformers import LlavaNextVideoForConditionalGeneration

    base = LlavaNextVideoForConditionalGeneration.from_pretrained(model)
    wrapped = peft.get_peft_model(
        base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    )
    wrapped.save_pretrained(out)
    tensors = load_file(out / "adapter_model.safetensors")
    (out / "adapter_model.safetensors").unlink()
    torch.save({**tensors, "args": argparse.Namespace(lr=1e-4)}, out / "adapter_model.bin")
    return out


def long_question_data(data: Path, root: Path) -> Path:
    """One task of two entries: a plain one, and one whose question is 20,000 words."""
    shutil.copytree(data, root)
    keep = root / "json" / "object_count.json"
    for other in (root / "json").glob("*.json"):
        if other != keep:
            other.unlink()
    good = json.loads(keep.read_text())[0]
    long = {**good, "question": " ".join(["how many objects appear"] * (LONG_QUESTION_WORDS // 4))}
    keep.write_text(json.dumps([good, long]))
    return root
