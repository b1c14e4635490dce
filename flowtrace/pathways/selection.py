"""Which of the search's cut cells to cut, decided on the select split (docs/pathways.md, step 4).

The search (flowtrace.pathways.discovery) cuts cells in an order fitted to its own few samples, its
*path*; its last point loses accuracy on others. The selection takes the path to samples the
search never saw, the select split, and decides which of its cells are cut. Two rules:

- ``repair`` (the default, fixed 2026-12-06 before its test split was generated): the select
  split is halved as the data are (`discovery.split_halves`: alternate samples within each
  task). On the first half, the *repair* half, the search's own procedure is run again along
  the path (`select_walk`: the same acceptance test, the same blocks with back-off from 64, the
  same patience of 8): a cell of the path that breaks a repair sample is kept and the walk goes
  on past it, so a single harmful cell no longer ends the pathway. The walk's cut cells, in the
  order it cut them, are then a path of their own, fitted to the repair half; on the second
  half, the *stop* half, none of which the walk saw, the prefix rule picks how much of it to
  cut. Both halves allow no failing sample by default (the search's own test).
- ``prefix`` (the rule of 2026-12-02): the longest prefix of the search's path at which at most
  ``max_failures`` (1%) of the select samples fail the acceptance test, scanned every ``step``
  cells and refined by bisection (`select_prefix`). It stops at the path's first cell that
  breaks the select split, however harmless the cells after it.

The acceptance test is the search's (`cells.keeps`): a sample answered right clean must stay
right and keep at least ``min_ratio`` (0.5) of its clean p(true answer).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from flowtrace.errors import FlowtraceError
from flowtrace.models import LoadedModel
from flowtrace.pathways.cells import Cell, FitSample
from flowtrace.pathways.discovery import greedy_cut, split_halves
from flowtrace.pathways.frontier import prefix_outcomes

RULES = ("repair", "prefix")
# Each rule's default share of select samples that may fail the acceptance test: the repair
# rule allows none in either half (the search's own test), the prefix rule 1% (its 2026-12-02
# revision: 1 of 128).
DEFAULT_MAX_FAILURES = {"repair": 0.0, "prefix": 0.01}


@dataclass
class Selection:
    """What a rule selected: the order its prefixes were checked in (the search's path for the
    prefix rule; the walk's cut cells, then the path's others, for repair) and how many of them
    it cuts, the evidence, the outcome on every select sample with those cut, and the rule's
    constants."""

    rule: str
    order: list[Cell]
    found: int
    checked: xr.Dataset  # the prefixes checked (selection_cube/): point × sample
    selected: xr.Dataset  # every select sample at the selected point: correct, prob_true, passes
    constants: dict
    walk: xr.Dataset | None = None  # the repair walk's proposals (walk_cube/): proposal × sample
    halves: tuple[list[str], list[str]] | None = None  # repair and stop sample ids

    @property
    def cut(self) -> list[Cell]:
        """The path's cells the selection cuts, in the order cut."""
        return self.order[: self.found]

    def elimination(self, rest: Sequence[Cell]) -> list[Cell]:
        """The frontier's order: `order`, then `rest` (the cells the search kept). Its first
        len(path) cells are the search's cut cells whatever was selected: the search's last
        point."""
        return list(self.order) + list(rest)


def select(
    loaded: LoadedModel,
    engine,
    items: Sequence[FitSample],
    path: Sequence[Cell],
    ratio: float,
    rule: str = "repair",
    max_failures: float | None = None,
    step: int = 8,
    block: int = 64,
    patience: int = 8,
    log: Callable[[str], None] = lambda _: None,
) -> Selection:
    """The path's cells to cut, by `rule` (module docstring), on the select split `items`, none
    of which the search saw. `max_failures` (a share of each half or of the split): the rule's
    default when None."""
    share = failure_share(rule, max_failures)
    if not any(it.clean.correct for it in items):
        raise FlowtraceError("no select sample is answered right clean: nothing to select on")
    constants = {"rule": rule, "min_ratio": ratio, "max_failures": share, "step": step}
    walk, halves, order = None, None, list(path)
    if rule == "prefix":
        stop = list(items)
        stop_within = len(path)
    else:
        first, second = split_halves([it.sample for it in items])
        by_id = {it.sample.id: it for it in items}
        repair, stop = [by_id[s.id] for s in first], [by_id[s.id] for s in second]
        halves = ([it.sample.id for it in repair], [it.sample.id for it in stop])
        allowed = allowed_failures(len(repair), share)
        walked, walk = select_walk(
            loaded, engine, repair, path, ratio, block, patience, allowed, log
        )
        log(f"  repair half ({len(repair)} samples): {len(walked)} of {len(path)} cells cut")
        kept = set(walked)
        order = walked + [c for c in path if c not in kept]
        stop_within = len(walked)
        constants |= {
            "block": block,
            "patience": patience,
            "repair_samples": len(repair),
            "repair_allowed": allowed,
            "walk_cut": len(walked),
        }
        walk.attrs.update(path=json.dumps([list(c) for c in path]))
    k, checked = select_prefix(loaded, engine, stop, order, stop_within, ratio, step, share)
    constants |= {"stop_samples": len(stop), "stop_allowed": allowed_failures(len(stop), share)}
    checked.attrs.update(
        selection_rule=rule,
        path=json.dumps([list(c) for c in path]),
        order=json.dumps([list(c) for c in order]),
    )
    selected = path_outcomes(loaded, engine, items, order, [k], ratio)
    selected = selected[["correct", "prob_true", "passes"]].isel(point=0, drop=True)
    return Selection(rule, order, k, checked, selected, constants, walk, halves)


def failure_share(rule: str, max_failures: float | None) -> float:
    """The share of select samples `rule` lets fail (its default when None); refuses an
    unknown rule or a share outside [0, 1) before any model work."""
    if rule not in RULES:
        raise FlowtraceError(f"selection rule {rule!r}: one of {', '.join(RULES)}")
    share = DEFAULT_MAX_FAILURES[rule] if max_failures is None else max_failures
    allowed_failures(1, share)
    return share


def allowed_failures(n: int, share: float) -> int:
    """How many of `n` select samples may fail the acceptance test: the largest count not more
    than `share` of them (1% of 128: 1; 0: none)."""
    if not 0 <= share < 1:
        raise FlowtraceError(f"max_select_failures {share}: must be in [0, 1) (share of samples)")
    return int(np.floor(share * n + 1e-9))


def select_walk(
    loaded: LoadedModel,
    engine,
    items: Sequence[FitSample],
    path: Sequence[Cell],
    ratio: float,
    block: int = 64,
    patience: int = 8,
    allowed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[list[Cell], xr.Dataset]:
    """The repair walk: the search's procedure (`discovery.greedy_cut`) along `path` on `items`,
    at most `allowed` of them failing. Returns the cells cut, in order (none when cutting the
    edges no cell holds already fails), and every proposal it tried (`walk_cube`)."""
    rows: list[dict] = []
    result = greedy_cut(
        loaded, engine, items, path, ratio, block, patience, allowed, log=log, record=rows
    )
    cut = [] if result is None else list(result.cut_order)
    return cut, walk_cube(rows, items)


def walk_cube(rows: Sequence[dict], items: Sequence[FitSample]) -> xr.Dataset:
    """The walk's proposals (in the order tried) × select samples: whether the sample was asked
    (a refused proposal stops at its first failures), its answer and p(true answer) (NaN when
    not asked); per proposal where it starts on the path, its size, the cells cut with it and
    whether it passed."""
    n, m = len(rows), len(items)
    asked = np.zeros((n, m), dtype=bool)
    correct = np.zeros((n, m), dtype=bool)
    p_true = np.full((n, m), np.nan, dtype=np.float32)
    for r, row in enumerate(rows):
        for i, right, p in row["asked"]:
            asked[r, i], correct[r, i], p_true[r, i] = True, right, p
    per_proposal = {
        key: np.asarray([row[key] for row in rows], dtype=dtype)
        for key, dtype in (("start", np.int64), ("size", np.int64), ("cells_cut", np.int64))
        + (("passed", bool),)
    }
    arrays = {"asked": asked, "correct": correct, "prob_true": p_true}
    return sample_cube("proposal", arrays, per_proposal, items)


def sample_cube(
    dim: str,
    arrays: dict[str, np.ndarray],
    coords: dict[str, np.ndarray],
    items: Sequence[FitSample],
) -> xr.Dataset:
    """A selection cube: `arrays` (each n × samples) over (dim, sample), `coords` over dim, and
    per sample its id, task, whether it is right clean and its clean p(true answer)."""
    n = next(iter(arrays.values())).shape[0]
    return xr.Dataset(
        {
            **{name: ((dim, "sample"), values) for name, values in arrays.items()},
            "clean_correct": (("sample",), np.array([it.clean.correct for it in items])),
            "clean_prob_true": (
                ("sample",),
                np.array([float(it.clean.probs[it.clean.true_id]) for it in items], np.float32),
            ),
        },
        coords={
            dim: np.arange(n),
            **{name: (dim, values) for name, values in coords.items()},
            "sample": [it.sample.id for it in items],
            "task": ("sample", [it.sample.task for it in items]),
        },
    )


def path_outcomes(
    loaded: LoadedModel,
    engine,
    items: Sequence[FitSample],
    elimination: Sequence[Cell],
    points: Sequence[int],
    ratio: float,
) -> xr.Dataset:
    """Per point k × sample, with the first k cells of `elimination` cut: right, p(true answer),
    and whether the sample passes the acceptance test (`keeps`; a sample wrong clean passes
    trivially: there is nothing to keep)."""
    out = prefix_outcomes(loaded, engine, items, elimination, points, ratio)
    arrays = {name: out[name] for name in ("correct", "prob_true", "passes")}
    return sample_cube("point", arrays, {"cells_cut": np.asarray(points, np.int64)}, items)


def select_prefix(
    loaded: LoadedModel,
    engine,
    items: Sequence[FitSample],
    elimination: Sequence[Cell],
    searched: int,
    ratio: float,
    step: int = 8,
    max_failures: float = 0.01,
) -> tuple[int, xr.Dataset]:
    """The prefix rule: the number k <= `searched` of the path's cells to cut. Prefixes 0, step,
    2·step, …, searched are checked (`path_outcomes`); a prefix holds when at most
    `allowed_failures(len(items), max_failures)` samples fail the acceptance test; k is the last
    holding prefix before the first that does not hold, refined by bisection between those two.
    Returns k and every prefix checked (point × sample), sorted by k: the evidence for k."""
    if not any(it.clean.correct for it in items):
        raise FlowtraceError("no select sample is answered right clean: nothing to select on")
    allowed = allowed_failures(len(items), max_failures)

    def holds(ds: xr.Dataset) -> np.ndarray:
        return (~ds["passes"]).sum("sample").values <= allowed

    grid = sorted(set(range(0, searched, max(1, step))) | {searched})
    checked = [path_outcomes(loaded, engine, items, elimination, grid, ratio)]
    held = holds(checked[0])
    if held.all():
        return searched, checked[0]
    first = int(np.argmin(held))  # the first prefix that does not hold
    if first == 0:
        return 0, checked[0]  # even the edges of no cell: the path holds nowhere
    low, high = grid[first - 1], grid[first]
    while high - low > 1:
        mid = (low + high) // 2
        one = path_outcomes(loaded, engine, items, elimination, [mid], ratio)
        checked.append(one)
        low, high = (mid, high) if bool(holds(one)[0]) else (low, mid)
    ds = xr.concat(checked, "point", data_vars="minimal", coords="minimal").sortby("cells_cut")
    return low, ds.assign_coords(point=np.arange(ds.sizes["point"]))
