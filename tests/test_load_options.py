"""load_model(weights=False): an architecture from config.json alone, with seeded random weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from flowtrace.errors import FlowtraceError
from flowtrace.models import load_model


@pytest.fixture()
def weightless(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny LLaVA-NeXT-Video checkpoint without its weight files."""
    out = tmp_path / "weightless"
    out.mkdir()
    for f in tiny_model_dir.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, out / f.name)
    return out


def test_llava_next_video_builds_random_weights_without_weight_files(
    weightless: Path, tiny_model_dir: Path
):
    with pytest.raises(FlowtraceError, match="no weights found"):
        load_model(str(weightless), device="cpu", dtype="float32")
    random = load_model(str(weightless), device="cpu", dtype="float32", weights=False)
    again = load_model(str(weightless), device="cpu", dtype="float32", weights=False)
    saved = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    assert random.adapter.name == "llava_next_video" and random.revision == "random"
    ours, theirs = dict(random.model.named_parameters()), dict(saved.model.named_parameters())
    assert ours.keys() == theirs.keys()
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    # Seeded: the same weights twice, and not the checkpoint's; N(0, 0.02) matrices, unit norms.
    assert torch.equal(ours[key], dict(again.model.named_parameters())[key])
    assert not torch.equal(ours[key], theirs[key])
    assert float(ours[key].detach().std()) == pytest.approx(0.02, rel=0.1)
    norm = "model.language_model.layers.0.input_layernorm.weight"
    assert torch.equal(ours[norm], torch.ones_like(ours[norm]))
