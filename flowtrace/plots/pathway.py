"""Effective pathways: accuracy with only the pathways kept, against random cuts."""

from __future__ import annotations

import math

import altair as alt
import pandas as pd
import xarray as xr

from flowtrace.plots.common import subtitle, titled
from flowtrace.reading.summary import accuracy_after, clean_accuracy, counted, edge_shares
from flowtrace.store import analysed


def pathway_chart(ds: xr.Dataset, title: str) -> alt.LayerChart:
    """Accuracy: clean, with only the effective pathways, and with random cuts of equal budget,
    all over every counted sample (skipped ones count as wrong, as in the reference code)."""
    ok = analysed(ds)
    after = accuracy_after(ds)
    shares = edge_shares(ds)
    rows = [{"run": "clean", "accuracy": clean_accuracy(ds), "kept": 100.0, "paper": 100.0}]
    for condition, (kept, paper) in shares.items():
        accuracy = float(after.sel(condition=condition))
        rows.append({"run": condition, "accuracy": accuracy, "kept": kept, "paper": paper})
    table = pd.DataFrame(rows)
    # Both shares of edges kept (flowtrace.tokens.edge_share): from the first video token on, and
    # the
    # paper's over all causal pairs; a store that predates the paper's names only the first.
    table["label"] = [
        f"{a:.1f}% · {k:.1f}% edges kept"
        + ("" if run == "clean" or math.isnan(p) else f" ({p:.1f}% of all pairs, paper)")
        for run, a, k, p in zip(table.run, table.accuracy, table.kept, table.paper, strict=True)
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
