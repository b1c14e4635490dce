"""Fixtures: a tiny random LLaVA-NeXT-Video saved like a real checkpoint, and a tiny dataset.

Also: an unexpected fast-engine fall-back fails the test, and the slow tests are marked `slow`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowtrace.data import read_samples, synth
from flowtrace.models.prompts import EVAL_MVBENCH

ROOT = Path(__file__).resolve().parents[1]

# Tests that take more than about 10 s on the 2-core CI machine, by file (every test in it) or by
# node id (a test and all its parameters). `pytest -m "not slow"` runs the rest.
SLOW_FILES: set[str] = set()
SLOW_TESTS: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    # Here rather than in pyproject's filterwarnings: see the comment there.
    config.addinivalue_line("filterwarnings", "error::flowtrace.engine.fast.FastEngineFallback")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::")[0]
        base = item.nodeid.split("[")[0]
        if Path(path).name in SLOW_FILES or base in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


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
