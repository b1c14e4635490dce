"""A pathway found end to end: the search on the search split (flowtrace.pathways.discovery), its
selection on the select split (flowtrace.pathways.selection), and only then the test split's
frontier;
the result written as a found_pathway folder (docs/pathways.md)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from flowtrace.data import Sample
from flowtrace.engine import make_engine
from flowtrace.errors import FlowtraceError, OptionError
from flowtrace.models import LoadedModel
from flowtrace.outputs import PATHWAYS, claims
from flowtrace.pathways import selection
from flowtrace.pathways.cells import prepare_samples
from flowtrace.pathways.discovery import (
    attribution_order,
    pathway_recipe,
    recipe_source,
    search,
    split_three,
)
from flowtrace.pathways.frontier import frontier, frontier_chart, frontier_table
from flowtrace.plots import save_chart

CUBE_MARKER = ".flowtrace-cube"  # in a cube folder `pathways --find` wrote


def write_cube(ds: xr.Dataset, path: Path) -> None:
    """`ds` as a zarr folder at `path`, whole or not at all: written beside it and renamed into
    place. A folder already there is replaced only if a search wrote it (its marker)."""
    if path.exists() and not (path / CUBE_MARKER).is_file():
        raise OptionError(
            "out", f"{path} exists and was not written by a pathway search; choose another out"
        )
    staging = path.with_name(f".{path.name}.writing-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    ds.to_zarr(staging, mode="w", consolidated=True)
    (staging / CUBE_MARKER).write_text("written by flowtrace pathways --find\n")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        path.rename(old)
    staging.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def load_search(folder: Path) -> dict:
    """A finished search read back from a found_pathway folder (its summary and the search's own
    order: its frontier cube's `search_elimination`, or `elimination` in folders written before
    the selection could reorder the frontier's path), so that a new selection or test split can
    reuse it: the search saw only its search split."""
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text())
    cube = xr.open_zarr(folder / "frontier_cube")
    return {
        "from": str(folder),
        "model": summary["model"],
        "min_ratio": summary["min_ratio"],
        "search_ids": list(summary["search_ids"]),
        "elimination": [
            tuple(c)
            for c in json.loads(cube.attrs.get("search_elimination", cube.attrs["elimination"]))
        ],
        "searched": int(summary["cells_cut_by_search"]),
        "search_s": summary["search_s"],
        "proposals": summary["proposals"],
    }


def discover(
    loaded: LoadedModel,
    samples: Sequence[Sample],
    out: Path,
    min_ratio: float = 0.5,
    seeds: int = 4,
    frames: int | None = None,
    log: Callable[[str], None] = print,
    step: int = 8,
    select_samples: Sequence[Sample] | None = None,
    test_samples: Sequence[Sample] | None = None,
    fresh: dict | None = None,
    max_select_failures: float | None = None,
    reuse_search: dict | None = None,
    rule: str = "repair",
) -> dict:
    """Search a pathway on the search split of `samples`, select its length on the select split,
    and only then measure its frontier on the test split (`split_three`; `select_samples` and
    `test_samples`, when given, replace those two splits, e.g. fresh ones from `fresh_split`,
    described by `fresh` in the summary); write `out/`: frontier_cube (the test split's cube,
    zarr), selection_cube (the select split's checks), frontier.csv, frontier.png/.html,
    recipe.py, summary.json. `reuse_search` (from `load_search`): take that search's cut order
    instead of searching again; it must have searched this model on these search samples with
    this min_ratio. `rule` and `max_select_failures` choose the selection
    (flowtrace.pathways.selection:
    `repair` by default, no select sample failing; `prefix`, the rule of 2026-12-02, 1%); `step`
    is the scan step of the prefixes checked; the repair walk's proposals go to walk_cube/."""
    selection.failure_share(rule, max_select_failures)  # a bad rule or share: before any work
    engine = make_engine("fast", loaded)
    search_samples, own_select, own_test = split_three(samples)
    select_samples = own_select if select_samples is None else list(select_samples)
    test_samples = own_test if test_samples is None else list(test_samples)
    ids = [{s.id for s in part} for part in (search_samples, select_samples, test_samples)]
    if sum(map(len, ids)) != len(set().union(*ids)):
        raise FlowtraceError("the search, select and test splits share sample ids")
    started = time.time()
    fit = prepare_samples(loaded, engine, search_samples, frames)
    judge = prepare_samples(loaded, engine, select_samples, frames)
    log(
        f"{len(fit)} search and {len(judge)} select samples prepared "
        f"({time.time() - started:.0f} s)"
    )
    if reuse_search is None:
        order, scores = attribution_order(engine, fit, loaded.num_layers)
        log(f"{len(order)} cells ranked by attribution ({time.time() - started:.0f} s)")
        result = search(loaded, engine, fit, order, min_ratio=min_ratio, log=log, scores=scores)
        search_s = time.time() - started
        log(f"search: {len(result.kept)} kept of {len(order)} ({search_s:.0f} s)")
        elimination, searched = result.elimination_order(), len(result.cut_order)
        proposals, reused = len(result.steps), None
    else:
        mismatch = [
            name
            for name, theirs, ours in (
                ("model", reuse_search["model"], loaded.model_id),
                ("min_ratio", reuse_search["min_ratio"], min_ratio),
                ("search samples", sorted(reuse_search["search_ids"]), sorted(ids[0])),
            )
            if theirs != ours
        ]
        if mismatch:
            raise FlowtraceError(
                f"the search of {reuse_search['from']} differs in {', '.join(mismatch)}: "
                "it cannot be reused here"
            )
        elimination = [tuple(c) for c in reuse_search["elimination"]]
        searched, search_s = int(reuse_search["searched"]), float(reuse_search["search_s"])
        proposals, reused = int(reuse_search["proposals"]), str(reuse_search["from"])
        log(f"search reused from {reused}: {searched} cells cut of {len(elimination)}")
    path, rest = elimination[:searched], elimination[searched:]
    chosen = selection.select(
        loaded, engine, judge, path, min_ratio, rule, max_select_failures, step=step, log=log
    )
    elimination, found, checked = chosen.elimination(rest), chosen.found, chosen.checked
    allowed = chosen.constants["stop_allowed"]
    log(
        f"selected on the select split ({rule} rule): {found} of the {searched} cells the "
        "search cut are cut"
    )
    kept_cells = elimination[found:]
    # The pathway is fixed: only now is the test split read.
    test = prepare_samples(loaded, engine, test_samples, frames)
    grid = sorted(
        {
            0,
            found,
            searched,
            *np.linspace(0, found, 5).round().astype(int).tolist(),
            *np.linspace(found, searched, 4).round().astype(int).tolist(),
            *np.linspace(searched, len(elimination), 4).round().astype(int).tolist(),
        }
    )
    cube = frontier(loaded, engine, test, elimination, grid, seeds)
    on_search = selection.path_outcomes(loaded, engine, fit, elimination, [found], min_ratio)
    at = grid.index(found)
    cube = cube.assign_coords(
        found=("point", np.asarray(grid) == found), searched=("point", np.asarray(grid) == searched)
    )
    table = frontier_table(cube)
    row = table.iloc[at]
    model = loaded.model_id
    recipe = pathway_recipe(
        kept_cells,
        name="found_pathway",
        title=f"Found effective pathway of {model}: {len(kept_cells)} cells kept",
        description=(
            f"found by flowtrace.pathways.discovery: searched on {len(fit)} samples, length "
            "selected on "
            f"{len(judge)} others ({rule} rule, min_ratio {min_ratio}, at most "
            f"{allowed} failing); "
            f"test split ({len(test)} more): "
            f"{row.accuracy:.1f}% with {row.edges_kept_pct:.1f}% of edges kept "
            f"({row.paper_kept_pct:.1f}% by the paper's count)"
        ),
    )
    searched_row = table.iloc[grid.index(searched)]
    summary = {
        "model": model,
        "search_samples": len(fit),
        "select_samples": len(judge),
        "test_samples": len(test),
        "fresh": fresh or {},
        "cells": len(elimination),
        "cells_kept": len(kept_cells),
        "cells_cut_by_search": searched,
        "cells_cut_selected": found,
        "search_point": {
            "edges_kept_pct": float(searched_row.edges_kept_pct),
            "paper_kept_pct": float(searched_row.paper_kept_pct),
            "test_accuracy": float(searched_row.accuracy),
            "random_mean": float(searched_row.random_mean),
        },
        "min_ratio": min_ratio,
        "selection": chosen.constants,
        "cells_kept_by_selection": searched - found,
        "select_halves": (
            {"repair": chosen.halves[0], "stop": chosen.halves[1]} if chosen.halves else None
        ),
        "search_reused_from": reused,
        "edges_kept_pct": float(row.edges_kept_pct),
        "paper_kept_pct": float(row.paper_kept_pct),
        "test_accuracy": float(row.accuracy),
        "test_clean_accuracy": float(row.clean_accuracy),
        "random_mean": float(row.random_mean),
        "random_min": float(row.random_min),
        "random_max": float(row.random_max),
        "random_std": float(row.random_std),
        "search_accuracy": 100 * float(on_search["correct"].astype(float).mean()),
        "select_accuracy": 100 * float(chosen.selected["correct"].astype(float).mean()),
        "select_failures": int((~chosen.selected["passes"]).sum()),
        "select_clean_accuracy": 100 * float(checked["clean_correct"].astype(float).mean()),
        "search_s": round(search_s, 1),
        "total_s": round(time.time() - started, 1),
        "proposals": proposals,
        "search_ids": [it.sample.id for it in fit],
        "select_ids": [it.sample.id for it in judge],
        "test_ids": [it.sample.id for it in test],
        "kept": [list(c) for c in kept_cells],
    }
    attrs = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in summary.items()}
    cube.attrs.update(
        attrs,
        recipe_kind="Frontier",
        recipe="found_pathway",
        elimination=json.dumps([list(c) for c in elimination]),
        # The search's own order (its cut cells as it cut them, then its kept ones), which
        # `load_search` reuses: the frontier's order above puts the selection's cut cells first.
        search_elimination=json.dumps([list(c) for c in path + rest]),
    )
    checked.attrs.update(attrs, recipe_kind="Selection", recipe="found_pathway")
    out.mkdir(parents=True, exist_ok=True)
    # Plain xarray cubes, not run stores: no `.zarr` suffix, so `flowtrace report` skips them.
    write_cube(cube, out / "frontier_cube")
    write_cube(checked, out / "selection_cube")
    if chosen.walk is not None:
        chosen.walk.attrs.update(attrs, recipe_kind="Selection walk", recipe="found_pathway")
        write_cube(chosen.walk, out / "walk_cube")
    with claims(out) as held:  # whole files, never over the user's own (flowtrace.outputs)
        held.write(out / "frontier.csv", table.to_csv(index=False), PATHWAYS)
    save_chart(
        frontier_chart(table, f"{model}: found pathway vs random cuts (test split)"),
        out / "frontier",
        scale=1,
        owner=PATHWAYS,
    )
    doc = (
        f"Effective pathway of the {model} model, found by search "
        "(flowtrace.pathways.discovery).\n\n"
        f"{summary['cells_kept']} of {summary['cells']} (layer, source, target) cells are kept,\n"
        f"every other counted edge is cut. Searched on {len(fit)} samples, its length selected "
        f"on {len(judge)} others;\ntest split ({len(test)} samples neither saw): "
        f"{row.accuracy:.1f}% accuracy (clean {row.clean_accuracy:.1f}%)\n"
        f"with {row.edges_kept_pct:.1f}% of edges kept ({row.paper_kept_pct:.1f}% of all "
        "causal pairs, the paper's count); random cuts of the same per-layer "
        f"budget: {row.random_mean:.1f}%\n(min {row.random_min:.1f}, max "
        f"{row.random_max:.1f}, {seeds} seeds). Regenerate with\n"
        "`flowtrace pathways FLOW_MAP --find`; edit the layers to try others.\n"
    )
    if fresh:
        doc += (
            "The select and test splits are fresh synthetic samples (flowtrace.data.synth), "
            f"seeds {fresh.get('select_seed')} and\n{fresh.get('test_seed')}, none used for "
            "training or the embedded held-out set; regenerate with\n"
            f"`flowtrace pathways FLOW_MAP --find --fresh-select {fresh.get('select_per_task')} "
            f"--fresh-test {fresh.get('test_per_task')}`.\n"
        )
    with claims(out) as held:
        held.write(out / "recipe.py", recipe_source(recipe, doc), PATHWAYS)
        held.write(out / "summary.json", json.dumps(summary, indent=1) + "\n", PATHWAYS)
    lists = ("kept", "search_ids", "select_ids", "test_ids", "select_halves")
    log(json.dumps({k: v for k, v in summary.items() if k not in lists}))
    return summary
