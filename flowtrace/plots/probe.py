"""Clean-pass figures: the logit lens at the last token, and clean accuracy per task."""

from __future__ import annotations

import altair as alt
import pandas as pd
import xarray as xr

from flowtrace.plots.common import mean_ci, subtitle, titled
from flowtrace.plots.scales import band, clip_band
from flowtrace.reading.summary import counted
from flowtrace.store import analysed, keys


def gen_prob_chart(ds: xr.Dataset, title: str) -> alt.HConcatChart:
    """Layer-wise probability of the true vs the false option letters at the last token."""
    ok = analysed(ds)
    panels = []
    for lens in ok["lens"].values:
        rows = []
        for name, var in (("true option", "prob_true"), ("false options (mean)", "prob_false")):
            for layer in ok["layer"].values:
                values = ok[var].sel(lens=lens, layer=layer).values.astype(float)
                mean, low, high = mean_ci(values)
                rows.append(
                    {"letter": name, "layer": int(layer), "mean": mean, "low": low, "high": high}
                )
        lens_title = "with final norm" if lens == "norm" else "without final norm"
        # A probability's band ends at 0 and 1 (a normal interval on 8 samples ran to -0.4).
        table = clip_band(pd.DataFrame(rows), "probability")
        panels.append(band(table, "layer", "probability", "letter", lens_title))
    return titled(alt.hconcat(*panels), title, subtitle(ds, f"{ok.sizes['sample']} samples"))


def accuracy_chart(ds: xr.Dataset, title: str) -> alt.Chart:
    """Clean accuracy per task (eval-only runs), over every counted sample."""
    rows = counted(ds)
    table = (
        pd.DataFrame(
            {
                "task": [str(t) for t in rows["task"].values],
                "correct": rows["clean_correct"].values.astype(float) * 100,
            }
        )
        .groupby("task", as_index=False)
        .agg(accuracy=("correct", "mean"), n=("correct", "size"))
    )
    return (
        alt.Chart(table)
        .mark_bar()
        .encode(
            x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 100]), title="clean accuracy (%)"),
            y=alt.Y("task:N", title=None),
            tooltip=["task", alt.Tooltip("accuracy:Q", format=".1f"), "n"],
        )
        .properties(
            width=360,
            title=alt.TitleParams(
                f"{title} — clean accuracy", subtitle=str(ds.attrs.get(keys.MODEL))
            ),
        )
    )
