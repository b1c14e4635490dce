"""Knockout figures: curves per blocked edge, accuracy after knockout, per-head sweeps."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from flowtrace.plots.common import analysed, mean_ci, subtitle, titled, window_label
from flowtrace.summary import accuracy_after, clean_accuracy, counted

ACCURACY_NOTE = "over all {n} counted samples (skipped ones count as wrong, as in the reference)"


def knockout_summary(ds: xr.Dataset, measure: str = "rel_change_pred") -> pd.DataFrame:
    """Per (condition, layer): mean of `measure` over analysed samples, 95% CI, and the
    accuracy in % over every counted sample (`flowtrace.summary.accuracy_after`)."""
    ok = analysed(ds)
    after = accuracy_after(ds, measure)
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
                        "n": int((~np.isnan(at_layer)).sum()),
                    }
                )
    return pd.DataFrame(rows)


def knockout_chart(ds: xr.Dataset, title: str) -> alt.HConcatChart:
    """The paper's knockout figure: relative change of the answer's probability per layer
    (mean over analysed samples, 95% CI band), beside accuracy per layer with the clean
    accuracy, both over every counted sample."""
    table = knockout_summary(ds)
    n = int((ds["status"] == "ok").sum())
    total = counted(ds).sizes["sample"]
    clean_acc = clean_accuracy(ds)
    color = alt.Color("condition:N", title="blocked edge")
    x = alt.X("layer:Q", title=f"layer ({window_label(ds)})", axis=alt.Axis(tickMinStep=1))
    base = alt.Chart(table)
    area = base.mark_area(opacity=0.2).encode(x=x, y="low:Q", y2="high:Q", color=color)
    line = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("mean:Q", title="relative change in p(answer) (%)"),
        color=color,
        tooltip=["condition", "layer", alt.Tooltip("mean:Q", format=".2f"), "n"],
    )
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[4, 4]).encode(y="y:Q")
    prob = (area + line + zero).properties(width=360, height=240, title=f"{n} analysed samples")
    acc_line = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("accuracy:Q", title="accuracy (%)", scale=alt.Scale(domain=[0, 100])),
        color=color,
        tooltip=["condition", "layer", alt.Tooltip("accuracy:Q", format=".1f")],
    )
    clean = (
        alt.Chart(pd.DataFrame({"y": [clean_acc], "label": [f"clean {clean_acc:.1f}%"]}))
        .mark_rule(color="gray", strokeDash=[4, 4])
        .encode(y="y:Q", tooltip=["label"])
    )
    acc = (acc_line + clean).properties(
        width=360,
        height=240,
        title=alt.TitleParams(
            "accuracy after knockout (dashed: clean)",
            subtitle=ACCURACY_NOTE.format(n=total),
        ),
    )
    return titled(alt.hconcat(prob, acc), title, subtitle(ds))


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
    sub = subtitle(ds, f"{int((ds['status'] == 'ok').sum())} samples", window_label(ds))
    return titled(alt.vconcat(bars, heat), f"{title}: head by head", sub)


def compare_chart(stores: dict[str, xr.Dataset]) -> alt.FacetChart:
    """Knockout curves of several stores (models, datasets, settings) side by side: one panel per
    blocked edge, one line per store."""
    tables = []
    for run, ds in stores.items():
        if ds.attrs.get("recipe_kind", "Knockout") != "Knockout" or int(
            ds.attrs.get("eval_only", 0)
        ):
            raise ValueError(f"{run}: only knockout stores can be compared (this one is not)")
        table = knockout_summary(ds)
        table["run"] = run
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    x = alt.X("layer:Q", axis=alt.Axis(tickMinStep=1))
    base = alt.Chart().encode(x=x, color=alt.Color("run:N", title="store"))
    area = base.mark_area(opacity=0.15).encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title="relative change in p(answer) (%)"),
        tooltip=["run", "condition", "layer", alt.Tooltip("mean:Q", format=".2f"), "n"],
    )
    return (
        alt.layer(area, line, data=table)
        .properties(width=300, height=220)
        .facet(facet=alt.Facet("condition:N", title=None), columns=3)
        .properties(title="Knockout curves compared across stores")
    )
