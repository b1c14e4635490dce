"""The nnsight knockout equals an independent plain-PyTorch forward wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from plain_reference import plain_knockout_probs, plain_per_layer_probs

from flowtrace.data import read_frames, read_samples
from flowtrace.engine import KnockoutCondition, ReferenceEngine
from flowtrace.errors import FlowtraceError
from flowtrace.models import load_model
from flowtrace.recipe import load_recipe
from flowtrace.tokens.sweep import FIXED_WINDOW_FROM, WINDOW_RULE, Sweep, default_window

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "flowtrace" / "toy" / "embedded"


def video_positions(ids: torch.Tensor, video_id: int, frames: int) -> list[list[int]]:
    pos = (ids[0] == video_id).nonzero()[:, 0].tolist()
    per = len(pos) // frames
    return [pos[t * per : (t + 1) * per] for t in range(frames)]


def find_sublist(ids: list[int], sub: list[int]) -> list[int]:
    for start in range(len(ids) - len(sub) + 1):
        if ids[start : start + len(sub)] == sub:
            return list(range(start, start + len(sub)))
    raise AssertionError("sub-sequence not found")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_nnsight_knockout_matches_plain_pytorch(attn: str, tiny_model_dir: Path, tiny_data: Path):
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", attn=attn)
    sample = read_samples(tiny_data, tasks=["Moving Direction"])[0]
    prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
    inputs = prepared.inputs
    ids = inputs["input_ids"]
    frames = video_positions(ids, loaded.processor.video_token_id, 8)
    cross_frame = [(frames[t], [p for f in frames[:t] for p in f]) for t in range(1, 8)]
    question_ids = loaded.tokenizer(sample.question, add_special_tokens=False)["input_ids"]
    question = find_sublist(ids[0].tolist(), question_ids)
    last = [ids.shape[1] - 1]
    recipe_cross = load_recipe("recipes/cross_frame.py")
    blocked_cross = recipe_cross.conditions(prepared.layout, 4, Sweep(window=1))[
        0
    ].knockout.blocked[0]

    blocked_q = torch.zeros(ids.shape[1], ids.shape[1], dtype=torch.bool)
    blocked_q[np.ix_(last, question)] = True
    engine = ReferenceEngine(loaded, batch_size=3)
    cases = [
        (cross_frame, blocked_cross, (1, 2)),
        ([(last, question)], blocked_q, (2, 3)),
        (cross_frame, blocked_cross, (0,)),
    ]
    got = engine.knockout(inputs, [KnockoutCondition.window(b, layers) for _, b, layers in cases])
    clean = plain_knockout_probs(loaded.model, inputs, [], [])
    moved = 0.0
    for row, (pairs, _, layers) in zip(got, cases, strict=True):
        want = plain_knockout_probs(loaded.model, inputs, pairs, layers)
        assert torch.allclose(row, want, atol=1e-5, rtol=0), (row - want).abs().max()
        moved = max(moved, float((want - clean).abs().max()))
    assert moved > 1e-4, "the knockouts should change the output, or the test proves nothing"
    assert torch.allclose(engine.clean(inputs), clean, atol=1e-5, rtol=0)


def test_different_edges_per_layer_match_plain_pytorch(tiny_model_dir: Path, tiny_data: Path):
    """Effective pathways cut other edges in each layer; rows of one batch differ too."""
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", attn="eager")
    sample = read_samples(tiny_data, tasks=["Object Count"])[0]
    inputs = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8)).inputs
    ids = inputs["input_ids"]
    seq_len = ids.shape[1]
    frames = video_positions(ids, loaded.processor.video_token_id, 8)
    video = [p for f in frames for p in f]
    cross = [(frames[t], [p for f in frames[:t] for p in f]) for t in range(1, 8)]
    to_last = [([seq_len - 1], video)]

    def matrix(pairs):
        m = torch.zeros(seq_len, seq_len, dtype=torch.bool)
        for q, k in pairs:
            m[np.ix_(q, k)] = True
        return m & torch.ones(seq_len, seq_len, dtype=torch.bool).tril()

    plans = [{0: cross, 2: to_last, 3: cross + to_last}, {1: to_last}]
    conditions = [KnockoutCondition({i: matrix(p) for i, p in plan.items()}) for plan in plans]
    got = ReferenceEngine(loaded, batch_size=2).knockout(inputs, conditions)
    for row, plan in zip(got, plans, strict=True):
        want = plain_per_layer_probs(loaded.model, inputs, plan)
        assert torch.allclose(row, want, atol=1e-5, rtol=0), (row - want).abs().max()


def test_window_layers_follow_reference_formula():
    # Reference: range(max(0, l - w // 2), min(L, l - (-w // 2))) for center.
    for num_layers, window in [(32, 9), (8, 3), (8, 2), (5, 1)]:
        for layer in range(num_layers):
            center = list(
                range(max(0, layer - window // 2), min(num_layers, layer - (-window // 2)))
            )
            assert list(Sweep(window, "center").window_at(layer, num_layers)) == center
            inverse = [i for i in range(num_layers) if i not in center]
            assert list(Sweep(window, "inverse").window_at(layer, num_layers)) == inverse
            assert list(Sweep(window, "top_down").window_at(layer, num_layers)) == list(
                range(layer, num_layers)
            )
            assert list(Sweep(window, "bottom_up").window_at(layer, num_layers)) == list(
                range(layer + 1)
            )


def test_default_window_is_the_references_9_on_real_models():
    # The reference code's window for PLLaVA-7B/13B, Mini-InternVL and VideoLLaMA3 (32, 40, 28
    # layers) is 9; the old 9/32-of-depth rule gave 11 at 40 layers.
    assert [default_window(n) for n in (16, 18, 24, 28, 32, 40, 80)] == [9] * 7
    # Shallower: round(n * 9 / 32), made odd. 15 -> 4.22 -> 4 -> 5; 8 -> 2.25 -> 2 -> 3;
    # 6 -> 1.69 -> 2 -> 3; 4 -> 1.13 -> 1; 1 -> 0.28 -> 0 -> 1.
    assert [default_window(n) for n in (15, 8, 6, 4, 1)] == [5, 3, 3, 1, 1]
    assert "9" in WINDOW_RULE and str(FIXED_WINDOW_FROM) in WINDOW_RULE


@pytest.mark.parametrize("model", ["model", "planted"])
def test_embedded_toys_keep_the_window_their_results_were_made_with(model: str):
    """The shipped results/ stores were made with window 3; the toys stay below the threshold."""
    config = json.loads((EMBEDDED / model / "config.json").read_text())
    assert config["text_config"]["num_hidden_layers"] == 8
    assert default_window(8) == 3
    attrs = [
        json.loads(path.read_text())["attributes"]
        for path in (ROOT / "results").glob("*/*.zarr/zarr.json")
    ]
    windows = {a["window"] for a in attrs if "window" in a}
    assert windows == {3}


def test_starved_query_is_refused(tiny_model_dir: Path):
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    blocked = torch.zeros(6, 6, dtype=torch.bool)
    blocked[3, :4] = True  # query 3 may see keys 0..3 only: all of them blocked
    engine = ReferenceEngine(loaded)
    inputs = {"input_ids": torch.ones(1, 6, dtype=torch.long)}
    with pytest.raises(FlowtraceError, match="no key"):
        engine.knockout(inputs, [KnockoutCondition.window(blocked, (0,))])
