"""Knockout figures: curves per blocked edge, accuracy after knockout, per-head sweeps."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from flowtrace.errors import FlowtraceError
from flowtrace.plots.common import mean_ci, subtitle, titled, window_label
from flowtrace.plots.scales import TITLES, band_fill, clip_band, colour, layer_x, y_scale
from flowtrace.reading.summary import accuracy_after, clean_accuracy, counted
from flowtrace.store import analysed, analysed_mask, keys

ACCURACY_NOTE = "over all {n} counted samples (skipped ones count as wrong, as in the reference)"


def knockout_summary(
    ds: xr.Dataset, measure: str = "rel_change_pred", by_task: bool = False
) -> pd.DataFrame:
    """Per (condition, layer): mean of `measure` over analysed samples, its 95% CI clipped to
    the measure's range (plots.scales), and the accuracy in % over every counted sample
    (`flowtrace.reading.summary.accuracy_after`), with the clean accuracy beside it. `by_task`: the
    same per task (a `task` column), each over its own samples."""
    if measure not in ds:
        numeric = [v for v in ds.data_vars if "layer" in ds[v].dims and ds[v].dtype.kind == "f"]
        raise FlowtraceError(
            f"var={measure}: not a variable of the store; curves can show {', '.join(numeric)}"
        )
    if by_task:
        tasks = sorted({str(t) for t in counted(ds)["task"].values})
        parts = []
        for task in tasks:
            part = knockout_summary(ds.isel(sample=ds["task"].values == task), measure)
            part.insert(0, "task", task)
            parts.append(part)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    ok = analysed(ds)
    after = accuracy_after(ds, measure)
    clean = clean_accuracy(ds)
    rows = []
    for source in ok["source"].values:
        for target in ok["target"].values:
            values = ok[measure].sel(source=source, target=target)
            if values.size == 0 or bool(values.isnull().all()):
                continue
            for layer in ok["layer"].values:
                at_layer = values.sel(layer=layer).values.astype(float)
                mean, low, high = mean_ci(at_layer)
                rows.append(
                    {
                        "condition": f"{source} -/-> {target}",
                        "layer": int(layer),
                        "mean": mean,
                        "low": low,
                        "high": high,
                        "accuracy": float(after.sel(source=source, target=target, layer=layer)),
                        "clean": clean,
                        "n": int((~np.isnan(at_layer)).sum()),
                    }
                )
    return clip_band(pd.DataFrame(rows), measure)


def knockout_chart(
    ds: xr.Dataset,
    title: str,
    measure: str = "rel_change_pred",
    y_range: tuple[float, float] | None = None,
    by_task: bool = False,
) -> alt.TopLevelMixin:
    """The paper's knockout figure: relative change of the answer's probability per layer
    (mean over analysed samples, 95% CI band), beside accuracy per layer with the clean
    accuracy, both over every counted sample. `measure`: the curve's variable; `y_range`: its
    axis, shared by every panel; `by_task`: one row of panels per task."""
    table = knockout_summary(ds, measure, by_task)
    n = int(analysed_mask(ds).sum())
    total = counted(ds).sizes["sample"]
    x = layer_x(ds["layer"].values, title=f"layer ({window_label(ds)})")
    y = alt.Y("mean:Q", title=TITLES.get(measure, measure), scale=y_scale(y_range))
    area = (
        alt.Chart()
        .mark_area(opacity=0.2, clip=True)
        .encode(
            x=x,
            y=alt.Y("low:Q", scale=y_scale(y_range)),
            y2="high:Q",
            fill=band_fill("condition"),
        )
    )
    line = (
        alt.Chart()
        .mark_line(point=True, clip=True)
        .encode(
            x=x,
            y=y,
            color=colour("condition", "blocked edge"),
            tooltip=["condition", "layer", alt.Tooltip("mean:Q", format=".2f"), "n"],
        )
    )
    zero = alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(0))
    acc_line = (
        alt.Chart()
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("accuracy:Q", title="accuracy (%)", scale=alt.Scale(domain=[0, 100])),
            color=colour("condition", "blocked edge"),
            tooltip=["condition", "layer", alt.Tooltip("accuracy:Q", format=".1f")],
        )
    )
    clean = (
        alt.Chart()
        .mark_rule(color="gray", strokeDash=[4, 4])
        .encode(
            y="mean(clean):Q", tooltip=[alt.Tooltip("mean(clean):Q", format=".1f", title="clean %")]
        )
    )
    size = {"width": 360, "height": 240} if not by_task else {"width": 300, "height": 160}
    prob = alt.layer(area, line, zero, data=table).properties(**size)
    acc = alt.layer(acc_line, clean, data=table).properties(**size)
    prob_title = f"{n} analysed samples"
    acc_title = alt.TitleParams(
        "accuracy after knockout (dashed: clean)", subtitle=ACCURACY_NOTE.format(n=total)
    )
    if by_task:
        row = alt.Row("task:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left"))
        chart = alt.hconcat(
            prob.facet(row=row).properties(title=prob_title),
            acc.facet(row=row).properties(title=acc_title),
        )
    else:
        chart = alt.hconcat(prob.properties(title=prob_title), acc.properties(title=acc_title))
    return titled(chart, title, subtitle(ds))


def head_chart(ds: xr.Dataset, title: str) -> alt.VConcatChart:
    """A per-head sweep: heads ranked by their largest effect over layers, per blocked edge,
    above the layer × head map of the effect."""
    ok = analysed(ds)
    effect = ok["rel_change_pred"].mean("sample", skipna=True)
    table = effect.to_dataframe(name="mean").reset_index().dropna(subset=["mean"])
    table["edge"] = table["source"].astype(str) + " -/-> " + table["target"].astype(str)
    table["size"] = table["mean"].abs()
    peak = table.groupby(["edge", "head"], as_index=False)["size"].max()
    bars = (
        alt.Chart(peak)
        .mark_bar()
        .encode(
            x=alt.X("size:Q", title="largest |relative change in p(answer)| over layers (%)"),
            y=alt.Y("head:N", sort="-x", title="head (ranked)"),
            tooltip=["edge", "head", alt.Tooltip("size:Q", format=".2f")],
        )
        .properties(width=300, height=alt.Step(12))
        .facet(column=alt.Column("edge:N", title=None))
        .resolve_scale(y="independent")
    )
    limit = float(table["size"].max()) if len(table) else 1.0
    heat = (
        alt.Chart(table)
        .mark_rect()
        .encode(
            x=alt.X("layer:O"),
            y=alt.Y("head:O"),
            color=alt.Color(
                "mean:Q",
                title="Δ p(answer) %",
                scale=alt.Scale(scheme="redblue", domain=[-limit, limit]),
            ),
            tooltip=["edge", "layer", "head", alt.Tooltip("mean:Q", format=".2f")],
        )
        .properties(width=300, height=alt.Step(12))
        .facet(column=alt.Column("edge:N", title=None))
    )
    sub = subtitle(ds, f"{int(analysed_mask(ds).sum())} samples", window_label(ds))
    return titled(alt.vconcat(bars, heat), f"{title}: head by head", sub)


def compare_chart(
    stores: dict[str, xr.Dataset],
    measure: str = "rel_change_pred",
    y_range: tuple[float, float] | None = None,
    by_task: bool = False,
) -> alt.FacetChart:
    """Knockout curves of several stores (models, datasets, settings) side by side: one panel per
    blocked edge (per task and edge with `by_task`), one line per store, every panel on one y
    scale (`y_range` fixes it)."""
    table = _stacked(stores, measure, by_task)
    area, line = _band_and_line(
        measure,
        y_range,
        "run",
        colour("run", "store"),
        ["run", "condition"],
        table["layer"],
        opacity=0.15,
    )
    layered = alt.layer(area, line, data=table).properties(width=300, height=220)
    if by_task:
        chart = layered.facet(
            row=alt.Row("task:N", title=None), column=alt.Column("condition:N", title=None)
        )
    else:
        chart = layered.facet(facet=alt.Facet("condition:N", title=None), columns=3)
    return chart.properties(title="Knockout curves compared across stores")


def combined_chart(
    stores: dict[str, xr.Dataset],
    measure: str = "rel_change_pred",
    y_range: tuple[float, float] | None = None,
) -> alt.TopLevelMixin:
    """One panel per store (a pass's sweeps, such as recipes/paper.py's four), one line per
    blocked edge in it, every panel on one y scale (`y_range` fixes it)."""
    table = _stacked(stores, measure, False)
    if y_range is None and len(table):  # one scale for every panel: effects compare by eye
        low = min(float(table[["low", "mean"]].min().min()), 0.0)
        high = max(float(table[["high", "mean"]].max().max()), 0.0)
        y_range = (low - 0.05 * (high - low), high + 0.05 * (high - low))
    panels = []
    legend = alt.Color("condition:N", title=None, legend=alt.Legend(orient="bottom"))
    for run in stores:
        part = table[table["run"] == run]
        area, line = _band_and_line(
            measure, y_range, "condition", legend, ["condition"], table["layer"]
        )
        zero = alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(0))
        panels.append(
            alt.layer(area, line, zero, data=part)
            .properties(width=300, height=220, title=run)
            .resolve_scale(color="independent", fill="independent")
        )
    # Each panel's colours are its own edges', bands (fill) and lines (color) alike: a fill
    # shared across panels sorted every panel's edges together and gave a band another colour.
    own = {"color": "independent", "fill": "independent"}
    rows = [alt.hconcat(*panels[i : i + 2]).resolve_scale(**own) for i in range(0, len(panels), 2)]
    first = next(iter(stores.values()))
    chart = alt.vconcat(*rows).resolve_scale(**own)
    return titled(
        chart,
        "Knockout sweeps of one pass",
        subtitle(first, f"{int(analysed_mask(first).sum())} analysed samples"),
    )


def _band_and_line(
    measure: str,
    y_range: tuple[float, float] | None,
    field: str,
    color: alt.Color,
    labels: list[str],
    layers,
    opacity: float = 0.2,
) -> tuple[alt.Chart, alt.Chart]:
    """A curve per `field` value over the layers: its confidence band and its line, on one y
    scale (`y_range` fixes it); `layers`, the layers the x axis spans."""
    x = layer_x(layers)
    area = (
        alt.Chart()
        .mark_area(opacity=opacity, clip=True)
        .encode(x=x, y=alt.Y("low:Q", scale=y_scale(y_range)), y2="high:Q", fill=band_fill(field))
    )
    line = (
        alt.Chart()
        .mark_line(point=True, clip=True)
        .encode(
            x=x,
            y=alt.Y("mean:Q", title=TITLES.get(measure, measure), scale=y_scale(y_range)),
            color=color,
            tooltip=[*labels, "layer", alt.Tooltip("mean:Q", format=".2f"), "n"],
        )
    )
    return area, line


def _stacked(stores: dict[str, xr.Dataset], measure: str, by_task: bool) -> pd.DataFrame:
    tables = []
    for run, ds in stores.items():
        if ds.attrs.get(keys.RECIPE_KIND, "Knockout") not in ("Knockout", "FlowMap") or int(
            ds.attrs.get(keys.EVAL_ONLY, 0)
        ):
            raise FlowtraceError(f"{run}: only knockout stores can be compared (this one is not)")
        table = knockout_summary(ds, measure, by_task)
        table["run"] = run
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
