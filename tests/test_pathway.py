"""Effective pathways: per-layer plans, edge accounting and random budgets, against hand counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from plain_reference import plain_per_layer_probs
from test_edges import small_layout

from flowtrace.data import read_frames, read_samples
from flowtrace.errors import RecipeError
from flowtrace.models import load_model
from flowtrace.recipe import EffectivePathway, counted_edges, random_plan
from flowtrace.runner import RunOptions, run
from flowtrace.tokens.edge_share import kept_shares, paper_from_counted, pooled


def test_plan_cuts_each_pathway_outside_its_kept_layers():
    recipe = EffectivePathway(
        name="t",
        title="t",
        pathways={"v2l": ("video -> last", None), "q2l": ("question -> last", (0.5, 1.0))},
    )
    plan = recipe.plan(small_layout(), num_layers=4)
    assert sorted(plan) == [0, 1, 2, 3]
    video_to_last = {(12, k) for k in range(2, 8)}
    question_to_last = {(12, 8), (12, 9)}
    for layer, want in [(0, video_to_last | question_to_last), (3, video_to_last)]:
        got = {(int(q), int(k)) for q, k in plan[layer].nonzero()}
        assert got == want


def test_counted_edges_and_random_budget():
    counted = counted_edges(small_layout())
    n = 13 - 2  # tokens from the first video token (position 2) on
    assert int(counted.sum()) == n * (n + 1) // 2
    assert not counted[:2].any() and not counted[:, :2].any()
    plan = random_plan(counted, {0: 5, 2: 17}, torch.Generator().manual_seed(3))
    assert {layer: int(cut.sum()) for layer, cut in plan.items()} == {0: 5, 2: 17}
    assert all(not (cut & ~counted).any() for cut in plan.values())
    again = random_plan(counted, {0: 5, 2: 17}, torch.Generator().manual_seed(3))
    assert all(torch.equal(plan[k], again[k]) for k in plan)


def test_pathway_run_matches_plain_reference(tiny_model_dir: Path, tiny_data: Path, tmp_path):
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    recipe = EffectivePathway(name="cut_v2l", title="t", pathways={"v2l": ("video -> last", None)})
    out = tmp_path / "ep.zarr"
    options = RunOptions(
        model=str(tiny_model_dir), data=str(tiny_data), limit=2, out=out, sample_mode="all"
    )
    run(recipe, options, loaded=loaded)
    ds = xr.open_zarr(out)
    samples = {s.id: s for s in read_samples(tiny_data)}
    for sample_id in ds["sample"].values:
        sample = samples[str(sample_id)]
        inputs = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8)).inputs
        ids = inputs["input_ids"][0]
        video = (ids == loaded.processor.video_token_id).nonzero()[:, 0].tolist()
        last = len(ids) - 1
        plan = {layer: [([last], video)] for layer in range(loaded.num_layers)}
        clean = plain_per_layer_probs(loaded.model, inputs, {})
        want = plain_per_layer_probs(loaded.model, inputs, plan)
        pred = int(clean.argmax())
        row = ds.sel(sample=sample_id)
        got = row["prob_pred"].sel(condition="pathway").item()
        assert got == pytest.approx(float(want[pred]), abs=1e-5)
        n = len(ids) - video[0]
        kept = 100 * (1 - len(video) / (n * (n + 1) / 2))
        # The paper's share: over every causal pair of the whole prompt, system prompt included.
        total = len(ids) * (len(ids) + 1) / 2
        paper = 100 * (1 - len(video) / total)
        for condition in ("pathway", "random"):
            share = row["edges_kept_pct"].sel(condition=condition).item()
            assert share == pytest.approx(kept, abs=1e-3)
            assert row["paper_kept_pct"].sel(condition=condition).item() == pytest.approx(
                paper, abs=1e-3
            )
        assert row["attention_pairs"].item() == total * loaded.num_layers
    assert "attention_amount" in ds.attrs["edges_kept_measures"]


def test_paper_share_on_a_hand_built_layout():
    # small_layout: T = 13 tokens, the video from position 2. Cutting video -> last (6 pairs)
    # in all 4 layers keeps 1 - 6/66 of flowtrace's 11·12/2 = 66 pairs per layer, and
    # 1 - 6/91 of the paper's 13·14/2 = 91.
    recipe = EffectivePathway(name="t", title="t", pathways={"v2l": ("video -> last", None)})
    layout = small_layout()
    ours, paper = kept_shares(recipe.plan(layout, 4), counted_edges(layout), 4)
    assert ours == pytest.approx(100 * 60 / 66)
    assert paper == pytest.approx(100 * 85 / 91)
    assert paper_from_counted(100 * 60 / 66, 13, 2) == pytest.approx(100 * 85 / 91)
    # Cut everything counted in layers 0 and 1 of 4: 2·66 of 4·91 pairs gone.
    rest = EffectivePathway(name="t", title="t", pathways={}, cut_rest=True)
    plan = {layer: cut for layer, cut in rest.plan(layout, 4).items() if layer < 2}
    ours, paper = kept_shares(plan, counted_edges(layout), 4)
    assert ours == pytest.approx(50.0)
    assert paper == pytest.approx(100 * (1 - 132 / 364))
    # Over samples the reference pools counts: (50·100 + 90·300) / 400, a NaN sample left out.
    assert pooled(np.array([50.0, 90.0, np.nan]), np.array([100, 300, 50])) == pytest.approx(80)


def test_explicit_layers_cut_rest_and_per_model_by_hand():
    keep_last = EffectivePathway(
        name="found",
        title="t",
        pathways={"q2l": ("question -> last", [1, 3]), "self": ("frame_0 -> frame_0", range(0, 1))},
        cut_rest=True,
    )
    layout = small_layout()
    plan = keep_last.plan(layout, num_layers=4)
    counted = {(q, k) for q in range(2, 13) for k in range(2, q + 1)}  # from the video on
    frame_0 = {(2, 2), (3, 2), (3, 3)}
    question_to_last = {(12, 8), (12, 9)}
    for layer, kept in [(0, frame_0), (1, question_to_last), (2, set()), (3, question_to_last)]:
        got = {(int(q), int(k)) for q, k in plan[layer].nonzero()}
        assert got == counted - kept, layer
    with pytest.raises(RecipeError, match="keeps layers \\[1, 3\\], but the model has 2"):
        keep_last.plan(layout, num_layers=2)
    paper = EffectivePathway(
        name="ep",
        title="t",
        pathways={"v2l": ("video -> last", None)},
        per_model={"toy": keep_last},
    )
    assert paper.for_model("toy").cut_rest and paper.for_model("toy").name == "ep"
    assert paper.for_model("other") is paper
