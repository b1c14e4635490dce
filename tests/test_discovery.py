"""Pathway discovery: cells and plans by hand, the search against a hand-made ground truth, and
the shipped found pathways against the issue's targets and the planted toy's routes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from test_edges import small_layout

from flowtrace.data import read_samples, sample_frames
from flowtrace.discovery import (
    FitSample,
    cell_index,
    cut_plan,
    frontier_table,
    kept_share,
    search,
    split_halves,
)
from flowtrace.layout import TokenLayout
from flowtrace.measure import Clean
from flowtrace.models import load_model
from flowtrace.models.planted import ROUTES, plant_blocked, token_groups
from flowtrace.pipeline.options import resolve_data
from flowtrace.recipe import counted_edges, load_recipe

RESULTS = Path(__file__).resolve().parents[1] / "results"


def layout_with_query() -> TokenLayout:
    base = small_layout()
    groups = dict(base.groups)
    groups["query"] = np.arange(8, 12)  # question 8-9, options 10, 11
    return TokenLayout(base.seq_len, groups, base.video_grid, base.option_letters, "A")


def test_cells_cover_the_counted_edges_by_hand():
    cell_of, pairs = cell_index(layout_with_query())
    # groups: frame_0 (2-3), frame_1 (4-5), frame_2 (6-7), query (8-11), last (12)
    assert pairs[0] == ("frame_0", "frame_0")
    assert ("query", "frame_0") not in pairs  # a source after its target has no causal edge
    assert len(pairs) == 5 * 6 // 2  # every pair with source at or before target
    counted = counted_edges(layout_with_query()).numpy()
    assert ((cell_of >= 0) == counted).all()  # no separators in this layout
    within = cell_of == pairs.index(("frame_1", "frame_1"))
    assert {(int(q), int(k)) for q, k in zip(*within.nonzero(), strict=True)} == {
        (4, 4),
        (5, 4),
        (5, 5),
    }
    assert (cell_of == pairs.index(("frame_0", "last"))).sum() == 2  # (12, 2), (12, 3)


class FakeLoaded:
    num_layers = 2

    @staticmethod
    def decode(token: int) -> str:
        return "AB"[token]


class FakeEngine:
    """p(A) drops under a cut of any edge of `needed`, by a share given per cell: a ground truth
    the search must recover (a cell whose cut keeps 60% of p(A) is harmless at min_ratio 0.5)."""

    def __init__(self, needed: dict[tuple[int, int, int], float]) -> None:
        self.needed, self.calls = needed, 0

    def knockout(self, inputs, conditions):
        self.calls += 1
        rows = []
        for condition in conditions:
            p = 0.9
            for (layer, q, k), factor in self.needed.items():
                if layer in condition.blocked and bool(condition.blocked[layer][q, k]):
                    p *= factor
            rows.append(torch.tensor([p, 1 - p]))
        return torch.stack(rows)


def fake_item() -> FitSample:
    layout = layout_with_query()
    cell_of, pairs = cell_index(layout)
    clean = Clean(torch.tensor([0.9, 0.1]), 0, 0, "A", "A")
    return FitSample(None, {}, layout, clean, counted_edges(layout), cell_of, pairs)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_keeps_exactly_the_cells_that_matter(seed: int):
    item = fake_item()
    # Needed: frame_2 -> query at layer 0 (edge 8<-6), query -> last at layer 1 (12<-9); a
    # mild one (x0.6) alone passes, two mild ones together fail: one of them must be kept.
    needed = {(0, 8, 6): 0.01, (1, 12, 9): 0.01, (0, 12, 3): 0.6, (1, 12, 4): 0.6}
    engine = FakeEngine(needed)
    cells = [(layer, *pair) for layer in range(2) for pair in item.pairs]
    order = [cells[i] for i in np.random.default_rng(seed).permutation(len(cells))]
    result = search(FakeLoaded(), engine, [item], order, min_ratio=0.5, block=4)
    kept = set(result.kept)
    assert {(0, "frame_2", "query"), (1, "query", "last")} <= kept
    mild = {(0, "frame_0", "last"), (1, "frame_1", "last")}
    assert len(kept & mild) == 1  # the first one met is cut, the second then fails
    assert len(kept) == 3
    assert set(result.cut_order) | kept == set(cells)
    # The plan of what is left cuts every needed edge but the kept ones, and keeps 3 cells' edges.
    plan = cut_plan(item, set(result.cut_order), 2)
    kept_edges = sum(int((item.cell_of == item.pairs.index(c[1:])).sum()) for c in kept)
    total = int(item.counted.sum()) * 2
    assert kept_share(item, plan, 2) == pytest.approx(100 * kept_edges / total)


def test_split_halves_alternates_within_tasks():
    samples = read_samples(resolve_data("toy"))
    fit, held = split_halves(samples)
    assert len(fit) == len(held) == 32
    assert not {s.id for s in fit} & {s.id for s in held}
    for task in {s.task for s in samples}:
        assert sum(s.task == task for s in fit) == sum(s.task == task for s in held)


def found(model: str) -> tuple[dict, xr.Dataset, Path]:
    folder = RESULTS / model / "found_pathway"
    summary = json.loads((folder / "summary.json").read_text())
    return summary, xr.open_zarr(folder / "frontier_cube"), folder / "recipe.py"


@pytest.mark.parametrize("model", ["toy", "planted"])
def test_found_pathway_dominates_random_on_the_held_out_half(model: str):
    """The issue's targets on the 32 held-out samples. Both toys: at least half the counted edges
    cut, accuracy within 2 points of clean, above every random seed, and the frontier at or above
    random's mean at every point. The planted toy also beats random's mean by 20 points or more
    (measured: 100% vs 49.2% with 25.0% of edges kept); the default toy does not (100% vs 87.5%
    with 45.0% kept): it is robust to random cuts down to a third of its edges (docs/pathways.md
    says why), and the fit-half selection stops before the budgets where random falls off."""
    summary, cube, _ = found(model)
    table = frontier_table(cube)
    # Recomputed from the cube's per-sample cells, not read from the summary.
    at = table[cube["found"].values].iloc[0]
    assert at.edges_kept_pct == pytest.approx(summary["edges_kept_pct"], abs=1e-3)
    assert at.accuracy == pytest.approx(summary["held_out_accuracy"], abs=1e-3)
    assert at.edges_kept_pct <= 50  # at least half of the counted edges cut
    assert at.accuracy >= at.clean_accuracy - 2
    assert at.accuracy > at.random_max  # above every seed
    if model == "planted":
        assert at.accuracy >= at.random_mean + 20
    else:
        assert at.accuracy - at.random_mean == pytest.approx(12.5)  # the known shortfall
    assert (table.accuracy >= table.random_mean).all()  # the whole frontier
    assert summary["held_out_samples"] == cube.sizes["sample"] == 32
    assert set(cube["sample"].values).isdisjoint(set(split_halves_ids()[0]))


def split_halves_ids() -> tuple[list[str], list[str]]:
    fit, held = split_halves(read_samples(resolve_data("toy")))
    return [s.id for s in fit], [s.id for s in held]


def test_planted_found_pathway_keeps_only_open_routes():
    """Every edge the found recipe keeps on the planted toy is one the plant leaves open."""
    loaded = load_model("planted", device="cpu")
    recipe = load_recipe(found("planted")[2])
    grid = tuple(loaded.model.config.flowtrace_plant["video_grid"])
    samples = read_samples(resolve_data("toy"))
    for sample in samples[::9]:
        frames = sample_frames(sample, loaded.adapter.default_frames, loaded.adapter)
        layout = loaded.adapter.prepare(loaded, sample, frames).layout
        codes = token_groups(layout)[0].numpy()
        blocked = plant_blocked(codes, ROUTES, loaded.num_layers, grid)
        plan = recipe.plan(layout, loaded.num_layers)
        counted = counted_edges(layout).numpy()
        kept_any = 0
        for layer in range(loaded.num_layers):
            kept = counted & ~plan[layer].numpy() if layer in plan else counted
            assert not (kept & blocked[layer]).any(), (sample.id, layer)
            kept_any += int(kept.sum())
        assert kept_any > 0
