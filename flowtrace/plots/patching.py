"""Counterfactual patching: how often a patched group flips the answer, layer by group."""

from __future__ import annotations

import altair as alt
import xarray as xr

from flowtrace.plots.common import subtitle, titled
from flowtrace.store import analysed


def patching_chart(ds: xr.Dataset, title: str) -> alt.TopLevelMixin:
    """One heatmap per counterfactual and site: the share of analysed samples whose answer flips
    when the group (x) is patched from the counterfactual run at the layer (y)."""
    ok = analysed(ds)
    flipped = ok["flipped"].astype(float)
    same = 0
    if "same_as_clean" in ok:  # a counterfactual equal to the clean video measures nothing
        flipped = flipped.where(~ok["same_as_clean"].astype(bool))
        same = int(ok["same_as_clean"].astype(bool).sum())
    flips = flipped.mean("sample")
    change = (ok["p_clean_answer"] - ok["clean_prob_pred"]).mean("sample")
    table = (
        xr.Dataset({"flip_rate": flips, "p_change": change})
        .to_dataframe()
        .reset_index()
        .astype({"counterfactual": str, "site": str, "group": str})
    )
    groups = [str(g) for g in ok["group"].values]
    heat = (
        alt.Chart(table)
        .mark_rect()
        .encode(
            x=alt.X("group:N", sort=groups, title=None),
            y=alt.Y("layer:O", sort="descending"),
            color=alt.Color(
                "flip_rate:Q",
                scale=alt.Scale(domain=[0, 1], scheme="blues"),
                title="answers flipped",
                legend=alt.Legend(format="%"),
            ),
            tooltip=[
                "counterfactual",
                "site",
                "layer",
                "group",
                alt.Tooltip("flip_rate:Q", format=".0%"),
                alt.Tooltip("p_change:Q", format=".3f", title="Δ p(clean answer)"),
            ],
        )
        .properties(width=260, height=160)
        .facet(row=alt.Row("counterfactual:N", title=None), column=alt.Column("site:N", title=None))
    )
    # The colour is the share of answers flipped, whatever the recipe's title says it measures
    # (the recipe records p(clean answer) too: the tooltip's change): the heading names it.
    name = title.split(":", 1)[0] or "counterfactual patching"
    heading = f"{name}: share of answers flipped with one group patched from a counterfactual"
    parts = [f"{ok.sizes['sample']} samples"]
    if same:
        parts.append(f"{same} counterfactual videos equal to the clean one left out")
    return titled(heat, heading, subtitle(ok, *parts))
