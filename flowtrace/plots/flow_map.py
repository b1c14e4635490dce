"""The flow map: a source × target heatmap per layer (slider) with a click-a-cell layer curve."""

from __future__ import annotations

import altair as alt
import pandas as pd
import xarray as xr

from flowtrace.plots.common import subtitle, titled, window_label
from flowtrace.plots.scales import layer_x
from flowtrace.reading.summary import accuracy_after, counted
from flowtrace.store import analysed, analysed_mask


def flow_map_table(ds: xr.Dataset, measure: str = "rel_change_pred") -> pd.DataFrame:
    """Mean of `measure` over analysed samples per (layer, source, target) with an edge, and the
    accuracy after the knockout over every counted sample."""
    mean = analysed(ds)[measure].mean("sample", skipna=True)
    accuracy = accuracy_after(ds, measure)
    table = xr.Dataset({"mean": mean, "accuracy": accuracy}).to_dataframe().reset_index()
    return table.dropna(subset=["mean"])


def flow_map_chart(ds: xr.Dataset, title: str) -> alt.HConcatChart:
    """Source × target heatmap of the knockout effect at the layer the slider picks; click a
    cell for its layer curve."""
    table = flow_map_table(ds)
    sources = [str(s) for s in ds["source"].values]
    targets = [str(t) for t in ds["target"].values]
    layers = int(ds.sizes["layer"])
    # Open on the strongest cell: its layer on the slider, its curve on the right.
    first = table.loc[table["mean"].abs().idxmax()] if len(table) else None
    slider = alt.param(
        name="at_layer",
        value=int(first["layer"]) if first is not None else 0,
        bind=alt.binding_range(min=0, max=layers - 1, step=1, name="layer "),
    )
    start = [{"source": first["source"], "target": first["target"]}] if first is not None else []
    pick = alt.selection_point(name="edge", fields=["source", "target"], value=start)
    limit = float(table["mean"].abs().max()) if len(table) else 1.0
    total = counted(ds).sizes["sample"]
    heat = (
        alt.Chart(table)
        .mark_rect()
        .encode(
            x=alt.X("source:N", sort=sources, title="source (keys cut)"),
            y=alt.Y("target:N", sort=targets, title="target (queries)"),
            color=alt.Color(
                "mean:Q",
                title="Δ p(answer) %",
                scale=alt.Scale(scheme="redblue", domain=[-limit, limit]),
            ),
            stroke=alt.condition(pick, alt.value("black"), alt.value(None)),
            tooltip=[
                "source",
                "target",
                "layer",
                alt.Tooltip("mean:Q", format=".2f"),
                alt.Tooltip("accuracy:Q", format=".1f", title=f"accuracy % (of {total})"),
            ],
        )
        .transform_filter(alt.datum.layer == slider)
        .add_params(slider, pick)
        # The layer in the title follows the slider; a PNG, which has no slider, says which
        # layer it shows (the strongest cell's).
        .properties(
            width=360,
            height=360,
            title=alt.TitleParams(
                alt.ExprRef("'relative change of p(answer) at layer ' + at_layer")
            ),
        )
    )
    curve = (
        alt.Chart(table)
        .transform_filter(pick)
        .transform_calculate(edge="datum.source + ' -/-> ' + datum.target")
        .mark_line(point=True)
        .encode(
            x=layer_x(table["layer"]),
            y=alt.Y("mean:Q", title="relative change in p(answer) (%)"),
            color=alt.Color("edge:N", title="clicked edge"),
            tooltip=["edge:N", "layer", alt.Tooltip("mean:Q", format=".2f")],
        )
        .properties(width=360, height=240, title="layer curve of the clicked cell")
    )
    n = int(analysed_mask(ds).sum())
    return titled(alt.hconcat(heat, curve), title, subtitle(ds, f"{n} samples", window_label(ds)))
