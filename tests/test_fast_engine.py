"""The fast engine gives the reference engine's numbers (DESIGN §4) and falls back when it can't."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from plain_reference import plain_knockout_probs, plain_per_layer_probs

from flowtrace.data import read_frames, read_samples
from flowtrace.engine import FastEngine, KnockoutCondition, ReferenceEngine
from flowtrace.models import load_model
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube

KNOCKOUT_RECIPES = ("cross_frame", "vql_to_ql", "question_options_to_last", "vq_to_true_option")
STYLES = ("center", "inverse", "top_down", "bottom_up")


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32", attn="sdpa")


@pytest.fixture(scope="module")
def prepared(loaded, tiny_data: Path):
    sample = read_samples(tiny_data, tasks=["Event Order"])[0]
    return loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))


@pytest.mark.parametrize("rows", ["auto", "batched", "side_by_side"])
@pytest.mark.parametrize("style", STYLES)
def test_every_knockout_recipe_matches_reference(style: str, rows: str, loaded, prepared):
    reference, fast = ReferenceEngine(loaded, batch_size=16), FastEngine(loaded, token_budget=400)
    fast.flat_tokens = {"auto": None, "batched": 0, "side_by_side": 10**9}[rows]
    fast.clean(prepared.inputs)
    clean = reference.clean(prepared.inputs)
    for name in KNOCKOUT_RECIPES:
        conditions = load_recipe(name).conditions(prepared.layout, loaded.num_layers, 3, style)
        knockouts = [c.knockout for c in conditions]
        want = reference.knockout(prepared.inputs, knockouts)
        got = fast.knockout(prepared.inputs, knockouts)
        gap = (got - want).abs().max()
        assert gap <= 1e-5, f"{name} {style}: max |Δp| {gap:.2e}"
        assert (want - clean).abs().max() > 1e-4, f"{name} {style} should move the answer"
    assert fast.used == {"fast"}


def test_per_layer_edges_and_mixed_starts_match_plain_pytorch(loaded, prepared):
    """Pathway plans cut other edges in each layer; rows of one call start at other positions."""
    layout = prepared.layout
    seq_len = layout.seq_len
    video, question, last = layout["video"], layout["question"], layout["last"]
    frames = [layout[f"frame_{t}"] for t in range(layout.num_frames)]

    def matrix(pairs):
        m = torch.zeros(seq_len, seq_len, dtype=torch.bool)
        for queries, keys in pairs:
            m[np.ix_(queries, keys)] = True
        return m

    cross = [(frames[t], np.concatenate(frames[:t])) for t in range(1, len(frames))]
    plans = [
        {0: cross, 1: [(question, video)], 3: [(last, question)]},
        {2: [(last, video)], 3: [(last, video), (last, question)]},
        {1: [(question, video)], 2: cross},
        {3: [(last, last[:0])]},  # lists layer 3 but cuts nothing: the clean answer
    ]
    conditions = [KnockoutCondition({k: matrix(v) for k, v in p.items()}) for p in plans]
    wants = [plain_per_layer_probs(loaded.model, prepared.inputs, plan) for plan in plans]
    for flat_tokens in (0, 10**9):
        fast = FastEngine(loaded, token_budget=40)  # forces several chunks
        fast.flat_tokens = flat_tokens
        clean = fast.clean(prepared.inputs)
        got = fast.knockout(prepared.inputs, conditions)
        for row, want in zip(got, wants, strict=True):
            assert torch.allclose(row, want, atol=1e-5, rtol=0), (row - want).abs().max()
        assert torch.equal(got[-1], clean)


def test_falls_back_to_reference_when_the_model_breaks_causality(tiny_model_dir, tiny_data):
    """A hook that mixes positions (no causal LM does) makes the shortcut wrong: it must notice."""
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", attn="sdpa")
    sample = read_samples(tiny_data, tasks=["Moving Direction"])[0]
    prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))

    def mix(module, args, output):
        return output + 0.5 * output.mean(dim=1, keepdim=True)

    layer = loaded.model.model.language_model.layers[1]
    handle = layer.register_forward_hook(mix)
    try:
        knockouts = [
            c.knockout
            for c in load_recipe("vql_to_ql").conditions(
                prepared.layout, loaded.num_layers, 1, "center"
            )
        ]
        fast = FastEngine(loaded)
        fast.clean(prepared.inputs)
        with pytest.warns(UserWarning, match="reference path"):
            got = fast.knockout(prepared.inputs, knockouts)
        want = ReferenceEngine(loaded).knockout(prepared.inputs, knockouts)
    finally:
        handle.remove()
    assert fast.used == {"reference"}
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_runner_engines_write_the_same_cube(tiny_model_dir: Path, tiny_data: Path, tmp_path):
    common = dict(model=str(tiny_model_dir), data=str(tiny_data), limit=3, window=3)
    common |= dict(sample_mode="all", device="cpu", plot=False)
    recipe = load_recipe("vql_to_ql")
    fast = run(recipe, RunOptions(out=tmp_path / "fast.zarr", **common))
    reference = run(recipe, RunOptions(out=tmp_path / "ref.zarr", engine="reference", **common))
    a, b = open_cube(fast.store), open_cube(reference.store)
    assert a.attrs["engine"] == "fast" and b.attrs["engine"] == "reference"
    assert set(a["engine"].values) == {"fast"} and set(b["engine"].values) == {"reference"}
    np.testing.assert_allclose(a["prob_true"].values, b["prob_true"].values, atol=1e-5)
    np.testing.assert_array_equal(a["new_pred"].values, b["new_pred"].values)


@pytest.mark.parametrize("flat_tokens", [0, 10**9])
def test_head_level_knockouts_match_plain_pytorch(flat_tokens, loaded, prepared):
    """Cut in some heads only: both engines against a per-head mask built by hand."""
    layout = prepared.layout
    cases = [  # (target, source, layers, heads)
        ("last", "question", [1, 2], (0,)),
        ("frame_3", "frame_1", [0], (1, 3)),
        ("question", "video", [2, 3], (2,)),
        ("last", "question", [1, 2], None),
    ]
    conditions = []
    for target, source, layers, heads in cases:
        blocked = torch.zeros(layout.seq_len, layout.seq_len, dtype=torch.bool)
        blocked[np.ix_(layout[target], layout[source])] = True
        conditions.append(KnockoutCondition.window(blocked, layers, heads))
    fast = FastEngine(loaded)
    fast.flat_tokens = flat_tokens
    fast.clean(prepared.inputs)
    got = fast.knockout(prepared.inputs, conditions)
    reference = ReferenceEngine(loaded).knockout(prepared.inputs, conditions)
    for row, ref_row, (target, source, layers, heads) in zip(got, reference, cases, strict=True):
        pairs = [(layout[target].tolist(), layout[source].tolist())]
        want = plain_knockout_probs(loaded.model, prepared.inputs, pairs, layers, heads)
        assert torch.allclose(row, want, atol=1e-5, rtol=0)
        assert torch.allclose(ref_row, want, atol=1e-5, rtol=0)
    assert (got[0] - got[3]).abs().max() > 1e-5, "one head is not all heads"
