"""Effective pathways: accuracy with only the pathways kept, against random cuts."""

from __future__ import annotations

import altair as alt
import pandas as pd
import xarray as xr

from flowtrace.plots.common import analysed, subtitle, titled
from flowtrace.summary import accuracy_after, clean_accuracy, counted


def pathway_chart(ds: xr.Dataset, title: str) -> alt.LayerChart:
    """Accuracy: clean, with only the effective pathways, and with random cuts of equal budget,
    all over every counted sample (skipped ones at their clean answer)."""
    ok = analysed(ds)
    after = accuracy_after(ds)
    rows = [{"run": "clean", "accuracy": clean_accuracy(ds), "kept": 100.0}]
    for condition in ok["condition"].values:
        rows.append(
            {
                "run": str(condition),
                "accuracy": float(after.sel(condition=condition)),
                "kept": float(ok["edges_kept_pct"].sel(condition=condition).mean()),
            }
        )
    table = pd.DataFrame(rows)
    table["label"] = [
        f"{a:.1f}% · {k:.0f}% edges kept" for a, k in zip(table.accuracy, table.kept, strict=True)
    ]
    base = alt.Chart(table).encode(
        y=alt.Y("run:N", sort=None, title=None),
        x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 100]), title="accuracy (%)"),
    )
    bars = base.mark_bar().encode(color=alt.Color("run:N", legend=None))
    text = base.mark_text(align="left", dx=4).encode(text="label:N")
    sub = subtitle(
        ds,
        f"{ok.sizes['sample']} analysed samples",
        f"accuracy over all {counted(ds).sizes['sample']} counted",
    )
    return titled((bars + text).properties(width=420, height=120), title, sub)
