"""The figure `flowtrace plot` draws of one or several stores: selected, labelled so that no run
is dropped, on a shared y range on request."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import altair as alt

from flowtrace.errors import FlowtraceError
from flowtrace.query import select, store_labels
from flowtrace.store import open_cube


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
