"""Pathway discovery: cells and plans by hand, the search against a hand-made ground truth, and
the shipped found pathways against the issue's targets and the planted toy's routes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from test_edges import small_layout

import flowtrace.pathways.discovery as discovery
import flowtrace.pathways.find_pathway as find_pathway
import flowtrace.pathways.selection as selection
from flowtrace.data import read_samples, sample_frames, synth
from flowtrace.errors import FlowtraceError
from flowtrace.kinds.common import Clean
from flowtrace.models import load_model
from flowtrace.models.planted import ROUTES, plant_blocked, token_groups
from flowtrace.pathways.discovery import (
    FitSample,
    cell_index,
    cut_plan,
    frontier_table,
    kept_share,
    search,
    split_halves,
    split_three,
)
from flowtrace.pipeline.options import resolve_data
from flowtrace.recipe import RECIPES_DIR, counted_edges, load_recipe
from flowtrace.tokens.layout import TokenLayout

RESULTS = Path(__file__).resolve().parents[1] / "results"
EMBEDDED = Path(__file__).resolve().parents[1] / "flowtrace" / "toy" / "embedded"


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


def items_needing(chosen, needed) -> list:
    """Fake prepared items for `chosen`, each answering right while the `needed` cells hold."""
    items = []
    for sample in chosen:
        item = fake_item()
        item.sample, item.inputs = sample, {"id": sample.id, "needed": needed}
        items.append(item)
    return items


def seeded_scores(sample_id: str) -> torch.Tensor:
    """A sample's fake attribution scores, seeded by its index."""
    seed = int(sample_id.split("/")[-1])
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(2, 1, 13, 13)))


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


def test_split_three_carves_search_and_select_out_of_the_fit_half():
    samples = read_samples(resolve_data("toy"))
    search_split, select_split, test = split_three(samples)
    assert [s.id for s in test] == [s.id for s in split_halves(samples)[1]]
    assert len(search_split) == len(select_split) == 16
    ids = [{s.id for s in part} for part in (search_split, select_split, test)]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 64  # disjoint, all samples
    # By hand: within each task (16 samples), search takes 0, 4, 8, 12; select 2, 6, 10, 14.
    by_task = {}
    for sample in samples:
        by_task.setdefault(sample.task, []).append(sample.id)
    for group in by_task.values():
        assert {i for i in group if i in ids[0]} == set(group[0::4])
        assert {i for i in group if i in ids[1]} == set(group[2::4])


def fake_items(n: int, needed_per_item) -> list[FitSample]:
    """n items of the small layout, each with its own sample id in `inputs` (the fake engine
    reads it) and its own ground truth `needed_per_item(i)`."""
    samples = read_samples(resolve_data("toy"))
    items = []
    for i in range(n):
        item = fake_item()
        item.sample = samples[i]
        item.inputs = {"id": samples[i].id, "needed": needed_per_item(i)}
        items.append(item)
    return items


class PerItemEngine(FakeEngine):
    """FakeEngine whose ground truth travels with the sample (inputs["needed"]); logs every
    sample id it is asked about, in order."""

    def __init__(self) -> None:
        super().__init__({})
        self.asked: list[str] = []

    def knockout(self, inputs, conditions):
        self.asked.append(inputs["id"])
        self.needed = inputs["needed"]
        return super().knockout(inputs, conditions)


@pytest.mark.parametrize("rule", ["repair", "prefix"])
@pytest.mark.parametrize("fresh", [False, True])
def test_discover_never_shows_test_samples_before_the_pathway_is_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: bool, rule: str
):
    """discover on fakes (engine, attribution, clean passes): every sample id each step receives
    is recorded. Attribution and search get the search split only, selection (either rule) the
    select split only, and the engine is asked about no test sample until selection has
    returned; with `fresh`, select and test splits passed in (as the shipped results' fresh
    synthetic ones) replace the data's, and the search still sees only the data's search
    split."""
    samples = read_samples(resolve_data("toy"))
    splits = split_three(samples)
    given = {}
    if fresh:  # stand-ins for fresh_split's samples: other ids, the embedded videos
        given = {
            "select_samples": [replace(s, id=f"select-1/{s.id}") for s in samples[:24]],
            "test_samples": [replace(s, id=f"test-2/{s.id}") for s in samples[24:60]],
        }
        splits = (splits[0], given["select_samples"], given["test_samples"])
    search_ids, select_ids, test_ids = ({s.id for s in part} for part in splits)
    engine = PerItemEngine()
    events: list[tuple[str, set[str]]] = []
    needed = {(0, 8, 6): 0.01, (1, 12, 9): 0.01, (0, 12, 3): 0.6}

    def fake_prepare(loaded, engine_, chosen, frames=None):
        events.append(("prepare", {s.id for s in chosen}))
        return fake_items(0, None) + items_needing(chosen, needed)

    def fake_attribution(engine_, inputs, target):
        engine.asked.append(inputs["id"])
        events.append(("attribution", {inputs["id"]}))
        return seeded_scores(inputs["id"])

    real_search, real_select = discovery.search, selection.select

    def spy_search(loaded, engine_, items, *args, **kwargs):
        events.append(("search", {it.sample.id for it in items}))
        return real_search(loaded, engine_, items, *args, **kwargs)

    def spy_select(loaded, engine_, items, *args, **kwargs):
        events.append(("select", {it.sample.id for it in items}))
        result = real_select(loaded, engine_, items, *args, **kwargs)
        events.append(("selected", set()))
        engine.asked.append("<selected>")
        return result

    class Loaded(FakeLoaded):
        model_id = "fake"

    monkeypatch.setattr(find_pathway, "make_engine", lambda kind, loaded: engine)
    monkeypatch.setattr(find_pathway, "prepare_samples", fake_prepare)
    monkeypatch.setattr(discovery, "edge_attribution", fake_attribution)
    monkeypatch.setattr(find_pathway, "search", spy_search)
    monkeypatch.setattr(selection, "select", spy_select)
    summary = find_pathway.discover(
        Loaded(), samples, tmp_path, seeds=2, log=lambda _: None, rule=rule, **given
    )

    steps = {name: ids for name, ids in events}
    assert steps["search"] == search_ids and steps["select"] == select_ids
    seen_by_attribution = set().union(*(ids for name, ids in events if name == "attribution"))
    assert seen_by_attribution == search_ids
    assert [ids for name, ids in events if name == "prepare"] == [search_ids, select_ids, test_ids]
    prepared_test = next(i for i, (name, ids) in enumerate(events) if ids == test_ids)
    assert prepared_test > next(i for i, (name, _) in enumerate(events) if name == "selected")
    fixed = engine.asked.index("<selected>")
    assert not set(engine.asked[:fixed]) & test_ids  # the sentinel: no test knockout before
    assert set(engine.asked[:fixed]) <= search_ids | select_ids
    assert set(engine.asked[fixed + 1 :]) >= test_ids  # the frontier is measured on all of them
    assert set(summary["select_ids"]) == select_ids and set(summary["search_ids"]) == search_ids
    cube = xr.open_zarr(tmp_path / "frontier_cube")
    assert set(cube["sample"].values) == test_ids
    stop = set(xr.open_zarr(tmp_path / "selection_cube")["sample"].values)
    assert summary["selection"]["rule"] == rule
    if rule == "prefix":
        assert stop == select_ids and not (tmp_path / "walk_cube").exists()
    else:  # the walk saw the repair half, the prefixes the stop half: the two halves, disjoint
        repair = set(xr.open_zarr(tmp_path / "walk_cube")["sample"].values)
        assert not repair & stop and repair | stop == select_ids
        halves = summary["select_halves"]
        assert (set(halves["repair"]), set(halves["stop"])) == (repair, stop)
    # The fake's two needed cells are kept; the shipped point is the selected one.
    assert {(0, "frame_2", "query"), (1, "query", "last")} <= {tuple(c) for c in summary["kept"]}
    assert summary["cells_cut_selected"] == int(cube["cells_cut"][cube["found"]].item())


def test_discover_reuses_a_search_without_searching_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A search read back by load_search gives the same cut order, selection and kept cells with
    attribution and search never called; a search of other samples is refused."""
    samples = read_samples(resolve_data("toy"))
    needed = {(0, 8, 6): 0.01, (1, 12, 9): 0.01, (0, 12, 3): 0.6}

    def fake_prepare(loaded, engine_, chosen, frames=None):
        return items_needing(chosen, needed)

    def fake_attribution(engine_, inputs, target):
        return seeded_scores(inputs["id"])

    class Loaded(FakeLoaded):
        model_id = "fake"

    monkeypatch.setattr(find_pathway, "make_engine", lambda kind, loaded: PerItemEngine())
    monkeypatch.setattr(find_pathway, "prepare_samples", fake_prepare)
    monkeypatch.setattr(discovery, "edge_attribution", fake_attribution)
    first = find_pathway.discover(Loaded(), samples, tmp_path / "a", seeds=2, log=lambda _: None)
    reused = find_pathway.load_search(tmp_path / "a")

    def refuse(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr(discovery, "edge_attribution", refuse)
    monkeypatch.setattr(find_pathway, "search", refuse)
    again = find_pathway.discover(
        Loaded(), samples, tmp_path / "b", seeds=2, log=lambda _: None, reuse_search=reused
    )
    assert first["search_reused_from"] is None and again["search_reused_from"] == str(
        tmp_path / "a"
    )
    for key in ("kept", "cells_cut_by_search", "cells_cut_selected", "test_accuracy"):
        assert again[key] == first[key], key
    elimination = [
        json.loads(xr.open_zarr(tmp_path / d / "frontier_cube").attrs["elimination"])
        for d in ("a", "b")
    ]
    assert elimination[0] == elimination[1]
    with pytest.raises(FlowtraceError, match="search samples"):
        find_pathway.discover(
            Loaded(), samples[1:], tmp_path / "c", seeds=2, log=lambda _: None, reuse_search=reused
        )


def found(model: str) -> tuple[dict, xr.Dataset, Path]:
    folder = RESULTS / model / "found_pathway"
    summary = json.loads((folder / "summary.json").read_text())
    return summary, xr.open_zarr(folder / "frontier_cube"), folder / "recipe.py"


# The shipped results' splits: the embedded data's search split; fresh synthetic select and test
# splits (discovery.fresh_split), 32 samples of each of the 4 tasks each.
SHIPPED_FRESH = {
    "select_seed": 40_001,
    "test_seed": 40_004,
    "select_per_task": 32,
    "test_per_task": 32,
}


def fresh_ids(name: str) -> list[str]:
    seed, n = SHIPPED_FRESH[f"{name}_seed"], SHIPPED_FRESH[f"{name}_per_task"]
    return [f"{name}-{seed}/{task}/{i:04d}" for task in sorted(synth.TASKS) for i in range(n)]


def split_ids() -> tuple[set[str], set[str], set[str]]:
    search_split = split_three(read_samples(resolve_data("toy")))[0]
    return {s.id for s in search_split}, set(fresh_ids("select")), set(fresh_ids("test"))


def clip_hash(clip: synth.Clip) -> str:
    return hashlib.sha256(clip.frames.tobytes()).hexdigest()


def test_fresh_split_is_the_generator_under_its_seed(tmp_path: Path):
    """fresh_split writes the generator's clips under FRESH_SEEDS, candidates unshuffled (as the
    toys were trained and held out), ids prefixed so no embedded id can equal one."""
    samples = discovery.fresh_split("test", 2, tmp_path)
    assert [s.id for s in samples] == [
        f"test-40004/{task}/{i:04d}" for task in sorted(synth.TASKS) for i in range(2)
    ]
    for sample in samples:
        task, index = sample.id.split("/")[1], int(sample.id.split("/")[2])
        clip = synth.make_clip(task, discovery.FRESH_SEEDS["test"], index, shuffle=False)
        assert (sample.question, sample.candidates, sample.answer) == (
            clip.question,
            tuple(clip.candidates),
            clip.answer,
        )


def test_fresh_splits_never_met_training_or_the_embedded_held_out_set():
    """The fresh splits' seeds are none of the seeds the embedded models' data were made with
    (every training run's seed in training.json and its chain of inits, and seed + the held-out
    offset), and no fresh clip's frames equal a held-out clip's or one of the first training
    clips' (drawn as training draws them). The held-out reference is checked to be the
    embedded set itself (same questions and answers under seed 10000). The earlier test splits'
    seeds (40002 and 40003, looked at) are neither of the new ones, and their clips are none of
    theirs."""
    from flowtrace.toy.train import HELDOUT_SEED_OFFSET

    used = set()
    for model in ("model", "planted"):
        record = json.loads((EMBEDDED / model / "training.json").read_text())
        while record:
            used |= {record["config"]["seed"], record["config"]["seed"] + HELDOUT_SEED_OFFSET}
            record = record.get("started_from")
    assert used == {0, 10_000}
    fresh_seeds = set(discovery.FRESH_SEEDS.values())
    looked_at = set(discovery.FRESH_SEEDS_USED.values())
    assert looked_at == {40_002, 40_003}
    assert len(fresh_seeds) == 2 and not fresh_seeds & (used | looked_at)
    shipped = {SHIPPED_FRESH["select_seed"], SHIPPED_FRESH["test_seed"]}
    assert shipped == fresh_seeds == {40_001, 40_004}
    embedded = read_samples(resolve_data("toy"))
    held_out = set()
    for sample in embedded:
        task, index = sample.id.split("/")[0], int(sample.id.split("/")[1])
        clip = synth.make_clip(task, 10_000, index, shuffle=False)
        assert (clip.question, tuple(clip.candidates), clip.answer) == (
            sample.question,
            sample.candidates,
            sample.answer,
        )
        held_out.add(clip_hash(clip))
    tasks = list(synth.TASKS)
    training = {clip_hash(synth.make_clip(tasks[i % 4], 0, i, shuffle=False)) for i in range(512)}
    fresh = set()
    for name in ("select", "test"):
        for sample_id in fresh_ids(name):
            task, index = sample_id.split("/")[1], int(sample_id.split("/")[2])
            fresh.add(
                clip_hash(synth.make_clip(task, discovery.FRESH_SEEDS[name], index, shuffle=False))
            )
    assert len(fresh) == 256  # the two fresh splits do not share a clip either
    assert not fresh & held_out and not fresh & training
    old_tests = {
        clip_hash(synth.make_clip(task, seed, i, shuffle=False))
        for seed in (40_002, 40_003)
        for task in synth.TASKS
        for i in range(32)
    }
    assert len(old_tests) == 256 and not fresh & old_tests


# The shipped selected point on the fresh test split (128 samples): test samples answered right
# clean, and right at the selected point. Asserted exactly, so that a rerun that changes them
# fails here.
SHIPPED_TEST = {"toy": (128, 126), "planted": (128, 127)}


@pytest.mark.parametrize("model", ["toy", "planted"])
def test_found_pathway_against_the_targets_on_the_test_split(model: str):
    """The issue's targets on the fresh test split (128 samples of seed 40004, generated only
    after the repair rule was committed, read only after selection): at least half the counted
    edges cut, 20 points above random cuts of the same budget, accuracy within 2 points of
    clean, the frontier at or above random's mean at every point. Both toys answer all 128
    right clean; at the selected point the default toy loses 2 (98.4%, 1.6 points under clean,
    inside the 2 points), the planted toy 1 (99.2%). The default toy's margin, +33.8 (random
    cuts of its 18.2% budget keep 64.6%), is asserted exactly."""
    summary, cube, _ = found(model)
    table = frontier_table(cube)
    # Recomputed from the cube's per-sample cells, not read from the summary.
    at = table[cube["found"].values].iloc[0]
    assert at.edges_kept_pct == pytest.approx(summary["edges_kept_pct"], abs=1e-3)
    assert at.accuracy == pytest.approx(summary["test_accuracy"], abs=1e-3)
    assert at.random_mean == pytest.approx(summary["random_mean"], abs=1e-3)
    assert at.edges_kept_pct <= 50  # at least half of the counted edges cut
    assert at.accuracy >= at.random_mean + 20
    if model == "toy":  # 98.4% vs 64.6% (docs/pathways.md)
        assert at.accuracy - at.random_mean == pytest.approx(33.7890625)
    assert at.accuracy > at.random_max  # above every seed
    n = cube.sizes["sample"]
    clean_right, right = SHIPPED_TEST[model]
    assert int(cube["clean_correct"].values.sum()) == clean_right
    assert int(cube["correct"].values[cube["found"].values][0].sum()) == right
    assert (at.accuracy, at.clean_accuracy) == (100 * right / n, 100 * clean_right / n)
    assert at.accuracy >= at.clean_accuracy - 2  # within 2 points of clean
    assert (table.accuracy >= table.random_mean).all()  # the whole frontier
    search_ids, select_ids, test_ids = split_ids()
    assert summary["fresh"] == SHIPPED_FRESH
    assert summary["test_samples"] == n == len(test_ids) == 128
    assert set(cube["sample"].values) == test_ids == set(summary["test_ids"])
    assert set(summary["search_ids"]) == search_ids and set(summary["select_ids"]) == select_ids
    assert summary["select_samples"] == len(select_ids) == 128


@pytest.mark.parametrize("model", ["toy", "planted"])
def test_effective_pathway_recipe_runs_the_found_pathway(model: str):
    """recipes/effective_pathway.py on an embedded toy is the found recipe, and that recipe keeps
    exactly the summary's kept cells (cells mapped to edges by cell_index, independently of the
    recipe's edge expressions)."""
    summary, _, path = found(model)
    shipped = load_recipe(RECIPES_DIR / "effective_pathway.py").for_model(model)
    assert shipped.cut_rest and shipped.pathways == load_recipe(path).pathways
    loaded = load_model(model, device="cpu")
    sample = read_samples(resolve_data("toy"))[5]
    frames = sample_frames(sample, loaded.adapter.default_frames, loaded.adapter)
    layout = loaded.adapter.prepare(loaded, sample, frames).layout
    cell_of, pairs = cell_index(layout)
    plan = shipped.plan(layout, loaded.num_layers)
    counted = counted_edges(layout).numpy()
    kept = {tuple(c) for c in summary["kept"]}
    for layer in range(loaded.num_layers):
        want = np.isin(cell_of, [i for i, p in enumerate(pairs) if (layer, *p) in kept])
        got = counted & ~plan[layer].numpy() if layer in plan else counted
        assert (got == (want & counted)).all(), layer


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
