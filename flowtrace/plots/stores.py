"""The figure `flowtrace plot` draws of one or several stores: selected, labelled so that no run
is dropped, on a shared y range on request."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import altair as alt
import xarray as xr

from flowtrace.errors import FlowtraceError
from flowtrace.paths import store_stem
from flowtrace.reading.query import select, store_labels
from flowtrace.store import analysed_mask, keys, open_cube


def stores_chart(
    paths: Sequence[Path],
    labels: Sequence[str] | None = None,
    variable: str | None = None,
    selection: dict[str, list[str]] | None = None,
    y_range: tuple[float, float] | None = None,
    by_task: bool = False,
    combined: bool = False,
) -> alt.TopLevelMixin:
    """One store's figure (`chart_for`), or several knockout stores' curves: one panel per
    blocked edge and a line per store (`compare_chart`), or with `combined` one panel per store
    (a pass's sweeps, `combined_chart`). Stores are labelled by `query.store_labels`; a label
    naming two stores is an error."""
    from flowtrace.plots import chart_for, combined_chart, compare_chart

    named = store_labels(paths, labels)
    cubes = {label: select(open_cube(path), selection or {}, path) for label, path in named.items()}
    if any(ds.sizes.get("sample", 0) == 0 for ds in cubes.values()):
        empty = next(label for label, ds in cubes.items() if ds.sizes.get("sample", 0) == 0)
        raise FlowtraceError(f"sel: no sample of {empty} is selected; nothing to draw")
    measure = variable or "rel_change_pred"
    if combined:
        if by_task:
            raise FlowtraceError("by_task: the combined figure has one panel per store already")
        return combined_chart(cubes, measure, y_range)
    if len(cubes) == 1:
        return chart_for(next(iter(cubes.values())), variable, y_range, by_task)
    return compare_chart(cubes, measure, y_range, by_task)


# The name of a pass's combined figure (a recipe's own figure is named after its store).
COMBINED = "combined"


def is_sweep(ds: xr.Dataset) -> bool:
    """Whether a store is a knockout sweep that a pass's combined figure draws: a Knockout
    recipe's curves over layers (a flow map's hundreds of edges, a per-head sweep and an
    eval-only run keep their own figures)."""
    return (
        ds.attrs.get(keys.RECIPE_KIND) == "Knockout"
        and not int(ds.attrs.get(keys.EVAL_ONLY, 0))
        and "rel_change_pred" in ds
        and "layer" in ds.dims
        and "head" not in ds.dims
        and bool(analysed_mask(ds).any())
    )


def combined_stem(stores: Sequence[Path]) -> Path:
    """Where a pass's combined figure goes, beside its stores: `combined` in their folder (a
    pass with --out DIR writes DIR/RECIPE.zarr), or, where each store has a folder of its own
    (results/RECIPE/RUN.zarr), `combined__RUN` in the folder above, after the first store's run."""
    parents = [Path(p).parent for p in stores]
    if len(set(parents)) == 1:
        return parents[0] / COMBINED
    try:
        common = Path(os.path.commonpath(parents))
    except ValueError:  # relative and absolute paths mixed
        common = Path(os.path.commonpath([p.absolute() for p in parents]))
    return common / f"{COMBINED}__{store_stem(stores[0])}"


def pass_figure(cubes: Mapping[str, xr.Dataset], stores: Sequence[Path]) -> list[Path]:
    """A pass's sweeps in one figure beside its stores (`combined_chart`: one panel per recipe
    named in `cubes`, one y scale), written for these stores alone (flowtrace.outputs)."""
    from flowtrace.plots import combined_chart, save_chart

    owner = "the pass of " + ", ".join(Path(p).name for p in stores)
    return save_chart(combined_chart(dict(cubes)), combined_stem(stores), owner=owner)
