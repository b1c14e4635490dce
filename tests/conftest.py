"""Fixtures: a tiny random LLaVA-NeXT-Video saved like a real checkpoint, and a tiny dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowtrace.data import read_samples, synth
from flowtrace.models.prompts import EVAL_MVBENCH

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("data"), n_per_task=2, seed=7)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """Random weights in the toy's architecture, saved with save_pretrained (a local checkpoint)."""
    from transformers import LlavaNextVideoForConditionalGeneration

    from flowtrace.toy.build import build_config, build_processor, build_tokenizer

    prompts = [EVAL_MVBENCH.render(s, "<video>").text for s in read_samples(tiny_data)]
    tokenizer = build_tokenizer(prompts)
    config = build_config(tokenizer, layers=4, hidden=64, heads=4, vision_hidden=32)
    torch.manual_seed(0)
    model = LlavaNextVideoForConditionalGeneration(config)
    # Random init leaves the answer distribution flat; scale the head so knockouts move it.
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    return out
