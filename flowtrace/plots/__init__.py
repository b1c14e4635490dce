"""Altair figures from cubes (HTML + PNG through vl-convert). Never imports torch.

`chart_for(ds)` looks the store's figure up by its `recipe_kind` attr in a registry; a kind with
no figure of its own gets a generic one chosen from its dims. `register_chart` adds a kind.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import altair as alt
import xarray as xr

from flowtrace.errors import FlowtraceError
from flowtrace.plots.common import (
    FIGURE_CELLS,
    Z95,
    FigureTooLarge,
    check_cells,
    figure_files,
    figure_stem,
    save_chart,
    save_store_figure,
)
from flowtrace.plots.flow_map import flow_map_chart, flow_map_table
from flowtrace.plots.generic import generic_chart, pick_variable
from flowtrace.plots.knockout import (
    combined_chart,
    compare_chart,
    head_chart,
    knockout_chart,
    knockout_summary,
)
from flowtrace.plots.patching import patching_chart
from flowtrace.plots.pathway import pathway_chart
from flowtrace.plots.probe import accuracy_chart, gen_prob_chart
from flowtrace.plots.video import attention_chart, frame_uri, video_lens_chart
from flowtrace.store import keys

ChartFn = Callable[[xr.Dataset, str], alt.TopLevelMixin]

__all__ = [
    "CHARTS",
    "FIGURE_CELLS",
    "ChartFn",
    "FigureTooLarge",
    "Z95",
    "accuracy_chart",
    "attention_chart",
    "chart_for",
    "combined_chart",
    "compare_chart",
    "figure_files",
    "figure_stem",
    "flow_map_chart",
    "flow_map_table",
    "frame_uri",
    "gen_prob_chart",
    "generic_chart",
    "head_chart",
    "knockout_chart",
    "knockout_summary",
    "pathway_chart",
    "patching_chart",
    "register_chart",
    "save_chart",
    "save_store_figure",
    "video_lens_chart",
]


def _video_lens(ds: xr.Dataset, title: str) -> alt.TopLevelMixin:
    overlay = json.loads(ds.attrs.get(keys.OVERLAY_LAYERS, "[]")) or [0.25, 0.5, 0.75, 1.0]
    return video_lens_chart(ds, title, tuple(overlay))


CHARTS: dict[str, ChartFn] = {
    "Knockout": knockout_chart,
    "FlowMap": flow_map_chart,
    "LayerProbe": gen_prob_chart,
    "VideoLogitLens": _video_lens,
    "EffectivePathway": pathway_chart,
    "AttentionMap": attention_chart,
    # Figures a trace program names (its `chart`), looked up before its kind.
    "counterfactual_patch": patching_chart,
}


def register_chart(kind: str, fn: ChartFn, *, replace: bool = False) -> None:
    """Make `fn(ds, title)` the figure of stores whose `recipe_kind` attr is `kind`."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"register_chart: kind must be a recipe kind's name, got {kind!r}")
    if not callable(fn):
        raise TypeError(f"register_chart: fn for {kind!r} must be callable(ds, title)")
    if kind in CHARTS and CHARTS[kind] is not fn and not replace:
        raise ValueError(
            f"register_chart: {kind!r} already has a figure ({CHARTS[kind].__name__}); "
            "pass replace=True to swap it"
        )
    CHARTS[kind] = fn


def chart_for(
    ds: xr.Dataset,
    variable: str | None = None,
    y_range: tuple[float, float] | None = None,
    by_task: bool = False,
) -> alt.TopLevelMixin:
    """The figure of a store, from its attributes alone (no model, no recipe file).

    The knockout figure draws `rel_change_pred` unless `variable` names another (say
    `rel_change_true`), on `y_range` if given, one row per task with `by_task`; a kind without a
    figure of its own draws `variable` or `generic.pick_variable`'s choice. Other figures draw
    fixed variables and refuse these options."""
    title = str(ds.attrs.get(keys.RECIPE_TITLE, ds.attrs.get(keys.RECIPE, "")))
    asked = {
        name: value
        for name, value in (("var", variable), ("y_range", y_range), ("by_task", by_task))
        if value
    }
    if int(ds.attrs.get(keys.EVAL_ONLY, 0)):
        chart, kind = accuracy_chart, "eval-only"
    elif "head" in ds.dims and "rel_change_pred" in ds:
        chart, kind = head_chart, "per-head"
    else:
        kind = str(ds.attrs.get(keys.CHART) or ds.attrs.get(keys.RECIPE_KIND, "Knockout"))
        chart = CHARTS.get(kind, generic_chart)
    options = {knockout_chart: {"var", "y_range", "by_task"}, generic_chart: {"var"}}
    takes = options.get(chart, set())
    refused = sorted(set(asked) - takes)
    if refused:
        raise FlowtraceError(
            f"{refused[0]}={asked[refused[0]]}: the {kind} figure draws its own variables "
            "on its own axes; `flowtrace query` exports any variable, per task too"
        )
    if chart is generic_chart:  # the one figure whose size follows the store's own dims
        check_cells(ds, variable or pick_variable(ds))
        return generic_chart(ds, title, variable)
    if chart is knockout_chart:
        return knockout_chart(ds, title, variable or "rel_change_pred", y_range, by_task)
    return chart(ds, title)
