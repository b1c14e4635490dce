"""The figure of a store whose recipe kind has no figure of its own, chosen from its dims."""

from __future__ import annotations

import altair as alt
import numpy as np
import xarray as xr

from flowtrace.errors import FlowtraceError
from flowtrace.plots.common import subtitle, titled
from flowtrace.plots.scales import layer_x
from flowtrace.store import analysed

MAX_SERIES = 24  # more lines than this do not read: average the remaining dims away


def pick_variable(ds: xr.Dataset) -> str:
    """The variable a generic figure shows: the knockout effect if there is one, else the
    numeric per-sample variable with the most dims."""
    if "rel_change_pred" in ds:
        return "rel_change_pred"
    numeric = [
        name
        for name, var in ds.data_vars.items()
        if np.issubdtype(var.dtype, np.number) or var.dtype == bool
    ]
    if not numeric:
        raise ValueError("the store has no numeric variable to draw")
    return max(numeric, key=lambda name: (ds[name].ndim, name != "clean_prob_pred"))


def _categorical(ds: xr.Dataset, dim: str) -> bool:
    return dim not in ds.coords or not np.issubdtype(ds[dim].dtype, np.number)


def generic_chart(ds: xr.Dataset, title: str, variable: str | None = None) -> alt.TopLevelMixin:
    """Mean over analysed samples of `variable` (default `pick_variable`): one line per series
    over `layer` when the store has a layer dim, a heatmap of two categorical dims, else bars of
    one dim."""
    ok = analysed(ds)
    if variable is not None and variable not in ok:
        raise FlowtraceError(
            f"var={variable}: not a variable of the store; it has "
            f"{', '.join(map(str, ok.data_vars))}"
        )
    name = variable or pick_variable(ok)
    mean = ok[name].astype(float)
    if "sample" in mean.dims:
        mean = mean.mean("sample", skipna=True)
    dims = list(mean.dims)
    sub = subtitle(ds, f"{ok.sizes['sample']} samples", f"mean of {name}")
    if "layer" in dims:
        others = [d for d in dims if d != "layer"]
        while others and int(np.prod([mean.sizes[d] for d in others])) > MAX_SERIES:
            mean = mean.mean(others.pop(), skipna=True)
        table = mean.to_dataframe(name="mean").reset_index().dropna(subset=["mean"])
        table["series"] = table[others].astype(str).agg(" · ".join, axis=1) if others else name
        chart = (
            alt.Chart(table[["layer", "series", "mean"]])
            .mark_line(point=True)
            .encode(
                x=layer_x(table["layer"]),
                y=alt.Y("mean:Q", title=name),
                color=alt.Color("series:N", title=" · ".join(others) or None),
                tooltip=["series", "layer", alt.Tooltip("mean:Q", format=".3g")],
            )
            .properties(width=420, height=260)
        )
        return titled(chart, title, sub)
    categorical = [d for d in dims if _categorical(mean, d)]
    keep = categorical[:2] if len(categorical) >= 2 else dims[:2]
    for dim in [d for d in dims if d not in keep]:
        mean = mean.mean(dim, skipna=True)
    table = mean.to_dataframe(name="mean").reset_index() if keep else None
    if table is None:
        table = mean.expand_dims(variable=[name]).to_dataframe(name="mean").reset_index()
        keep = ["variable"]
    for dim in keep:
        table[dim] = table[dim].astype(str)
    tooltip = [*keep, alt.Tooltip("mean:Q", format=".3g")]
    if len(keep) == 2:
        chart = (
            alt.Chart(table[[*keep, "mean"]])
            .mark_rect()
            .encode(
                x=alt.X(f"{keep[1]}:N", sort=None),
                y=alt.Y(f"{keep[0]}:N", sort=None),
                color=alt.Color("mean:Q", title=name),
                tooltip=tooltip,
            )
            .properties(width=360, height=360)
        )
    else:
        chart = (
            alt.Chart(table[[*keep, "mean"]])
            .mark_bar()
            .encode(
                x=alt.X("mean:Q", title=name),
                y=alt.Y(f"{keep[0]}:N", sort=None),
                tooltip=tooltip,
            )
            .properties(width=360)
        )
    return titled(chart, title, sub)
