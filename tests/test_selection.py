"""The selection rules (flowtrace.pathways.selection) against brute force on fakes whose ground
truth is
computed by hand, and the shipped selections re-derived from the cubes they wrote."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from test_discovery import (
    RESULTS,
    FakeLoaded,
    PerItemEngine,
    fake_item,
    fake_items,
    found,
    split_ids,
)

from flowtrace.data import Sample, read_samples
from flowtrace.errors import FlowtraceError
from flowtrace.pathways import selection
from flowtrace.pathways.discovery import FitSample, block_sizes, split_halves
from flowtrace.pathways.selection import select, select_prefix, select_walk
from flowtrace.pipeline.options import resolve_data


def small_path(seed: int) -> list:
    """Every cell of the small layout's 2 layers, in an order drawn by `seed`."""
    base = fake_item()
    cells = [(layer, *pair) for layer in range(2) for pair in base.pairs]
    return [cells[i] for i in np.random.default_rng(seed).permutation(len(cells))]


def random_needs(seed: int, picks: int = 3, factors=(0.3, 0.8, 0.9)):
    """Each sample's ground truth: `picks` counted edges drawn by (seed, sample), each scaling
    p(A) by its factor when cut (0.3 alone flips the answer; 0.8 and 0.9 only together with
    another)."""
    counted = np.argwhere(fake_item().counted.numpy())

    def needed(i: int) -> dict:
        rows = counted[np.random.default_rng(100 * seed + i).choice(len(counted), picks, False)]
        layers = np.random.default_rng(7 * seed + i).integers(0, 2, picks)
        return {
            (int(a), int(q), int(k)): f for a, (q, k), f in zip(layers, rows, factors, strict=True)
        }

    return needed


def passes_by_hand(item: FitSample, cut) -> bool:
    """The acceptance test from the ground truth, not through the engine: p(A) = 0.9 times the
    factor of each needed edge whose cell is cut; right (p(A) > p(B)) and half of 0.9 kept."""
    cut = set(cut)
    p = 0.9
    for (layer, q, key), factor in item.inputs["needed"].items():
        if (layer, *item.pairs[item.cell_of[q, key]]) in cut:
            p *= factor
    return p > 0.5 and p >= 0.5 * 0.9


def failures_by_hand(items, cut) -> int:
    return sum(not passes_by_hand(it, cut) for it in items)


def walk_by_hand(items, path, allowed: int, patience: int) -> list:
    """The repair walk by brute force, one cell at a time: cut a cell when at most `allowed`
    samples fail with it cut on top of the cells cut so far, else keep it; stop after
    `patience` cells kept in a row. (The walk proposes blocks; since a cut never raises p(A)
    here, the blocks it accepts are exactly runs of cells this one-at-a-time walk cuts.)"""
    if failures_by_hand(items, []) > allowed:
        return []
    cut, streak = [], 0
    for cell in path:
        if streak >= patience:
            break
        if failures_by_hand(items, [*cut, cell]) <= allowed:
            cut.append(cell)
            streak = 0
        else:
            streak += 1
    return cut


def prefix_by_hand(items, order, within: int, allowed: int) -> int:
    """The prefix rule by brute force: the last prefix before the first at which more than
    `allowed` samples fail (`within` if none does)."""
    bad = (k for k in range(within + 1) if failures_by_hand(items, order[:k]) > allowed)
    return next((k - 1 for k in bad), within)


def replay_walk(walk: xr.Dataset, path, ratio: float, allowed: int, block: int, patience: int):
    """The walk re-derived from its cube: each proposal's decision recomputed from the raw
    answers and p(true) of the samples it asked (a passing proposal must have asked every sample
    right clean), and the proposals checked to be, in order, exactly those the procedure makes
    from those decisions. Returns the cells cut."""
    judged = walk["clean_correct"].values.astype(bool)
    floor = ratio * walk["clean_prob_true"].values
    asked, correct = walk["asked"].values, walk["correct"].values
    p_true = walk["prob_true"].values
    start, size, cells_cut = (walk[k].values for k in ("start", "size", "cells_cut"))
    rows = iter(range(walk.sizes["proposal"]))

    def passed(r: int) -> bool:
        ok = correct[r] & (np.nan_to_num(p_true[r], nan=-1.0) >= floor)
        failed = int((asked[r] & judged & ~ok).sum())
        assert failed > allowed or (asked[r] | ~judged).all(), r  # a pass asked them all
        assert bool(walk["passed"].values[r]) == (failed <= allowed), r
        return failed <= allowed

    first = next(rows)
    assert (start[first], size[first], cells_cut[first]) == (0, 0, 0)
    if not passed(first):
        assert next(rows, None) is None
        return []
    cut, position, size_now, streak = [], 0, block, 0
    while position < len(path) and streak < patience:
        chosen = 0
        for s in block_sizes(size_now, len(path) - position):
            r = next(rows)
            assert (start[r], size[r], cells_cut[r]) == (position, s, len(cut) + s), r
            if passed(r):
                chosen = s
                break
        if chosen:
            cut += list(path[position : position + chosen])
            position, size_now, streak = position + chosen, min(2 * chosen, 1024), 0
        else:
            position, size_now, streak = position + 1, 1, streak + 1
    assert next(rows, None) is None  # every proposal in the cube is accounted for
    return cut


def fake_select_items(n: int, needed) -> list[FitSample]:
    """n fake prepared items with the embedded data's tasks (so split_halves alternates within
    each task) and distinct ids."""
    samples = read_samples(resolve_data("toy"))
    items = fake_items(n, needed)
    for i, item in enumerate(items):
        item.sample = replace(samples[(i * 17) % 64], id=f"sel/{i}")
        item.inputs = {**item.inputs, "id": item.sample.id}
    return items


@pytest.mark.parametrize("allowed", [0, 1])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_repair_walk_is_the_one_cell_at_a_time_greedy(seed: int, allowed: int):
    """select_walk (blocks with back-off, several block sizes and patiences) cuts exactly the
    cells, in the same order, that the brute-force walk does, and its cube replays to them."""
    path = small_path(seed)[:-3]
    items = fake_items(6, random_needs(seed))
    exercised = False
    for block, patience in ((64, 8), (4, 8), (1, 2), (8, 3)):
        want = walk_by_hand(items, path, allowed, patience)
        cut, walk = select_walk(
            FakeLoaded(), PerItemEngine(), items, path, 0.5, block, patience, allowed
        )
        assert cut == want, (block, patience)
        assert replay_walk(walk, path, 0.5, allowed, block, patience) == want
        assert set(walk["sample"].values) == {it.sample.id for it in items}
        exercised |= 0 < len(want) < len(path) and (patience == 8)
    assert exercised  # some cell is kept and the walk goes on past it


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_repair_rule_against_brute_force(seed: int):
    """The whole repair rule on 24 fake select samples: the walk on the repair half
    (split_halves' first half), the prefix rule on the stop half along the walk's cut cells,
    each by brute force from the ground truth; the rule cuts exactly those cells, and goes past
    the cell at which the prefix rule on the whole select split stops whenever the repair half
    refuses that cell."""
    path = small_path(seed)[:-2]
    items = fake_select_items(24, random_needs(seed, picks=2, factors=(0.3, 0.7)))
    first, second = split_halves([it.sample for it in items])
    by_id = {it.sample.id: it for it in items}
    repair, stop = [by_id[s.id] for s in first], [by_id[s.id] for s in second]
    walked = walk_by_hand(repair, path, 0, 8)
    order = walked + [c for c in path if c not in set(walked)]
    k = prefix_by_hand(stop, order, len(walked), 0)
    chosen = select(FakeLoaded(), PerItemEngine(), items, path, 0.5, "repair", step=3)
    assert chosen.cut == order[:k]
    assert chosen.halves == ([it.sample.id for it in repair], [it.sample.id for it in stop])
    assert chosen.constants == {
        "rule": "repair",
        "min_ratio": 0.5,
        "max_failures": 0.0,
        "step": 3,
        "block": 64,
        "patience": 8,
        "repair_samples": 12,
        "repair_allowed": 0,
        "walk_cut": len(walked),
        "stop_samples": 12,
        "stop_allowed": 0,
    }
    # The evidence: the walk replays from its cube; the stop half's prefixes are along `order`.
    assert replay_walk(chosen.walk, path, 0.5, 0, 64, 8) == walked
    assert json.loads(chosen.checked.attrs["order"]) == [list(c) for c in order]
    assert set(chosen.checked["sample"].values) == {it.sample.id for it in stop}
    # Every select sample at the selected point, as the ground truth says.
    want = [passes_by_hand(it, order[:k]) for it in items]
    assert chosen.selected["passes"].values.tolist() == want
    # The frontier's order: the walk's cut cells, the path's others, then the rest.
    assert chosen.order == order and chosen.found == k
    rest = [(9, "x", "y")]
    assert chosen.elimination(rest) == order + rest


def test_repair_goes_past_a_cell_that_stops_the_prefix_rule():
    """A hand-made case: cell 5 of the path breaks two select samples (one in each half), cell
    20 breaks every sample. The prefix rule stops before cell 5; the repair walk keeps cells 5
    and 20 and cuts every other, and the stop half holds them all. When only the stop half has
    a sample cell 5 breaks, the walk cuts it and the stop half ends the prefix right before."""
    path = small_path(11)
    base = fake_item()

    def edge(cell) -> tuple[int, int, int]:
        q, k = np.argwhere(base.cell_of == base.pairs.index(cell[1:]))[0]
        return (cell[0], int(q), int(k))

    items = fake_select_items(16, lambda i: {edge(path[20]): 0.01})
    first, second = split_halves([it.sample for it in items])
    for sample in (first[0], second[0]):
        item = next(it for it in items if it.sample.id == sample.id)
        item.inputs["needed"] = {**item.inputs["needed"], edge(path[5]): 0.01}
    prefix = select(FakeLoaded(), PerItemEngine(), items, path, 0.5, "prefix", 0.0)
    assert prefix.cut == path[:5] and prefix.walk is None
    repaired = select(FakeLoaded(), PerItemEngine(), items, path, 0.5, "repair")
    assert repaired.cut == [c for i, c in enumerate(path) if i not in (5, 20)]
    assert repaired.order == repaired.cut + [path[5], path[20]]
    assert repaired.selected["passes"].values.all()
    item = next(it for it in items if it.sample.id == first[0].id)
    item.inputs["needed"] = {edge(path[20]): 0.01}
    assert select(FakeLoaded(), PerItemEngine(), items, path, 0.5, "repair").cut == path[:5]


def test_selection_refuses_unknown_rules_and_shares():
    items = fake_items(2, lambda i: {})
    with pytest.raises(FlowtraceError, match="rule"):
        select(FakeLoaded(), PerItemEngine(), items, small_path(0), 0.5, "deepest")
    with pytest.raises(FlowtraceError, match="max_select_failures"):
        select(FakeLoaded(), PerItemEngine(), items, small_path(0), 0.5, "repair", 1.0)


@pytest.mark.parametrize("share", [0.0, 0.01, 0.25])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_select_is_the_longest_prefix_the_select_split_holds(seed: int, share: float):
    """The prefix rule against a brute force over every prefix, computed from the ground truth
    by hand, not through the engine: the last prefix before the first one at which more than
    `share` of the samples (0 of 4 for 0 and 1%, 1 of 4 for 25%) fail."""
    order = small_path(seed)
    items = fake_items(4, random_needs(seed))
    searched = len(order) - 5
    allowed = {0.0: 0, 0.01: 0, 0.25: 1}[share]
    want = prefix_by_hand(items, order, searched, allowed)
    for step in (1, 3, 8):
        k, checked = select_prefix(
            FakeLoaded(), PerItemEngine(), items, order, searched, 0.5, step, max_failures=share
        )
        assert k == want, (step, k, want)
        at = checked.sel(point=checked["cells_cut"].values == k)
        assert int((~at["passes"]).sum()) <= allowed
        if k < searched:
            after = checked.sel(point=checked["cells_cut"].values == k + 1)
            assert int((~after["passes"]).sum()) > allowed  # the evidence holds the stop
    assert 0 < want < searched  # the draw exercises the bisection, not an edge case
    chosen = select(FakeLoaded(), PerItemEngine(), items, order[:searched], 0.5, "prefix", share)
    assert chosen.cut == order[:want] and chosen.constants["step"] == 8


def test_select_tolerates_one_failing_sample_of_128_and_the_zero_rule_stops_there():
    """128 select samples; one of them (the 6th) loses its answer once cell 3 of the path is
    cut, every sample once cell 21 is. At 1% (1 of 128 may fail) the prefix rule goes on to 20;
    at 0 it stops at 2, before the one failure; at 1% two failing samples stop it."""
    base = fake_item()
    order = small_path(5)

    def edge(cell) -> tuple[int, int, int]:
        q, k = np.argwhere(base.cell_of == base.pairs.index(cell[1:]))[0]
        return (cell[0], int(q), int(k))

    def needed_with(fragile: set[int]):
        def needed(i: int) -> dict:
            out = {edge(order[20]): 0.01}
            if i in fragile:
                out[edge(order[2])] = 0.01
            return out

        return needed

    samples = read_samples(resolve_data("toy"))
    searched = len(order) - 2
    for fragile, share, want in (
        ({5}, 0.01, 20),
        ({5}, 0.0, 2),
        ({5, 77}, 0.01, 2),
        ({5}, 0.5, 20),
    ):
        items = []
        for i in range(128):
            item = fake_item()
            item.sample = replace(samples[i % 64], id=f"s/{i}")
            item.inputs = {"id": item.sample.id, "needed": needed_with(fragile)(i)}
            items.append(item)
        k, checked = select_prefix(
            FakeLoaded(), PerItemEngine(), items, order, searched, 0.5, 8, max_failures=share
        )
        assert k == want, (fragile, share, k)
    assert selection.allowed_failures(128, 0.01) == 1
    assert selection.allowed_failures(100, 0.01) == 1
    assert selection.allowed_failures(99, 0.01) == 0
    with pytest.raises(FlowtraceError):
        selection.allowed_failures(128, 1.0)


@pytest.mark.parametrize("model", ["toy", "planted"])
def test_shipped_selection_is_the_rule_applied_to_the_select_split(model: str):
    """The shipped selection re-derived from its cubes' raw answers and p(true) (not their
    `passes`): the walk replayed from walk_cube on the repair half (split_halves' first half of
    the select split) along the search's path, then the prefix rule from selection_cube on the
    stop half along the walk's cut cells: no stop sample failing at any checked prefix up to the
    selected one, one failing at the next cell's (unless the walk's last). The summary's kept
    cells are every cell but those."""
    summary, cube, _ = found(model)
    folder = RESULTS / model / "found_pathway"
    checked = xr.open_zarr(folder / "selection_cube").load()
    walk = xr.open_zarr(folder / "walk_cube").load()
    rule = summary["selection"]
    assert rule["rule"] == "repair" and rule["max_failures"] == 0.0
    assert (rule["repair_allowed"], rule["stop_allowed"]) == (0, 0)
    assert set(summary["select_ids"]) == split_ids()[1]
    first, second = split_halves([stand_in(i) for i in summary["select_ids"]])
    repair, stop = {s.id for s in first}, {s.id for s in second}
    assert set(walk["sample"].values) == repair and set(checked["sample"].values) == stop
    assert summary["select_halves"] == {
        "repair": list(walk["sample"].values),
        "stop": list(checked["sample"].values),
    }
    elimination = [tuple(c) for c in json.loads(cube.attrs["elimination"])]
    search_order = [tuple(c) for c in json.loads(cube.attrs["search_elimination"])]
    searched = summary["cells_cut_by_search"]
    path = search_order[:searched]
    assert [tuple(c) for c in json.loads(walk.attrs["path"])] == path
    walked = replay_walk(walk, path, summary["min_ratio"], 0, rule["block"], rule["patience"])
    assert len(walked) == rule["walk_cut"]
    order = walked + [c for c in path if c not in set(walked)]
    assert [tuple(c) for c in json.loads(checked.attrs["order"])] == order
    judged = checked["clean_correct"].values.astype(bool)
    floor = summary["min_ratio"] * checked["clean_prob_true"].values
    ok = checked["correct"].values & (checked["prob_true"].values >= floor)
    fails = (~ok)[:, judged].sum(1)
    k, cut = summary["cells_cut_selected"], checked["cells_cut"].values
    assert (fails[cut <= k] == 0).all() and (cut == k).any()
    if k < len(walked):
        assert (fails[cut == k + 1] > 0).all() and (cut == k + 1).any()
    assert set(range(0, len(walked), rule["step"])) <= set(cut.tolist())
    assert elimination == order + search_order[searched:]
    assert {tuple(c) for c in summary["kept"]} == set(elimination[k:])


def stand_in(sample_id: str) -> Sample:
    """A stand-in Sample for a fresh select id ("select-40001/Task/0007"): its id and task, all
    that split_halves reads."""
    return Sample(sample_id, sample_id.split("/")[1], Path(), "", (), "")
