"""Effective pathways derived from a flow map instead of read off by eye (beyond the paper).

The rule: a pathway's strength at a layer is the largest |mean relative change of p(answer)| over
the flow-map cells that make it up (cross-frame: frame s → frame t, s < t; video → question:
frame → question or option; question → last: question or option → last; video → last: frame →
last). The pathway is kept from the first to the last layer whose strength reaches `threshold`
times its peak, and cut everywhere else; a pathway that never moves the answer is cut in every
layer. Changes under a noise floor (NOISE_FLOOR, in %) count as none: the fast path and the
clean pass round differently. As in the paper, video → video is kept while video → question may
still read it, and question → question while question → last may.

On the embedded toys this rule loses to random pruning; flowtrace.pathways.discovery searches every
(layer, source, target) cell instead (`flowtrace pathways STORE --find`, docs/pathways.md).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from flowtrace.errors import FlowtraceError
from flowtrace.models import LoadedModel
from flowtrace.pipeline.analysis import load_run_model
from flowtrace.reading.summary import accuracy_after, clean_accuracy, counted, edge_shares
from flowtrace.recipe import EffectivePathway
from flowtrace.runner import RunOptions, run
from flowtrace.store import analysed, keys, open_cube

_FRAME = re.compile(r"^frame_(\d+)$")
# % relative change of p(answer) that counts as none by default. The fast path recomputes with
# other shapes than the clean pass and rounds differently: on float32 models with large logits
# a cut of nothing measurable moves p by up to ~1e-4 %; in bf16 far more (pass a larger floor).
NOISE_FLOOR = 1e-3


def _frame(name: str) -> int | None:
    match = _FRAME.match(name)
    return int(match.group(1)) if match else None


def _is_query(name: str) -> bool:
    return name == "question" or name.startswith("option_")


# pathway -> (edge expression it keeps or cuts, which flow-map cells (source, target) are it)
CELLS: dict[str, tuple[str, Callable[[str, str], bool]]] = {
    "cross_frame": (
        "frame[<t] -> frame[t]",
        lambda s, t: _frame(s) is not None and _frame(t) is not None and _frame(s) < _frame(t),
    ),
    "video_to_question": ("video -> query", lambda s, t: _frame(s) is not None and _is_query(t)),
    "question_to_last": ("query -> last", lambda s, t: _is_query(s) and t == "last"),
    "video_to_last": ("video -> last", lambda s, t: _frame(s) is not None and t == "last"),
}


def pathway_strength(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Per pathway, its strength at each layer (see the module's rule)."""
    if ds.attrs.get(keys.RECIPE_KIND) != "FlowMap":
        raise FlowtraceError(
            f"{ds.attrs.get(keys.RECIPE)}: pathways are derived from a flow-map store "
            "(flowtrace run recipes/flow_map.py)"
        )
    ok = analysed(ds)
    if ok.sizes["sample"] == 0:
        raise FlowtraceError("the flow-map store has no analysed samples")
    effect = np.abs(ok["rel_change_pred"].mean("sample", skipna=True))
    out = {}
    for name, (_, member) in CELLS.items():
        cells = [
            effect.sel(source=s, target=t).values
            for s in map(str, ds["source"].values)
            for t in map(str, ds["target"].values)
            if member(s, t)
        ]
        stacked = np.nan_to_num(np.stack(cells)) if cells else np.zeros((1, ds.sizes["layer"]))
        out[name] = stacked.max(0)
    return out


def derive_ranges(
    ds: xr.Dataset, threshold: float, floor: float | None = None
) -> dict[str, tuple[int, int] | None]:
    """Per pathway, the kept layers [start, stop) under the rule, or None (cut everywhere).

    `floor`: the noise floor in % (default NOISE_FLOOR).
    """
    if not 0 < threshold <= 1:
        raise FlowtraceError(f"threshold {threshold}: must be in (0, 1]")
    if floor is not None and floor < 0:
        raise FlowtraceError(f"noise floor {floor}: must be ≥ 0 (a % change of p)")
    floor = NOISE_FLOOR if floor is None else floor
    ranges: dict[str, tuple[int, int] | None] = {}
    for name, strength in pathway_strength(ds).items():
        peak = float(strength.max())
        strong = np.flatnonzero(strength >= max(threshold * peak, floor))
        ranges[name] = (int(strong[0]), int(strong[-1]) + 1) if len(strong) else None
    return ranges


def derived_recipe(
    ds: xr.Dataset, threshold: float, floor: float | None = None
) -> EffectivePathway:
    """An effective_pathway recipe whose kept ranges come from the flow map."""
    layers = ds.sizes["layer"]
    ranges = derive_ranges(ds, threshold, floor)

    def fraction(span: tuple[int, int] | None) -> tuple[float, float] | None:
        return None if span is None else (span[0] / layers, span[1] / layers)

    def until_end(span: tuple[int, int] | None) -> tuple[float, float] | None:
        return None if span is None else (0.0, span[1] / layers)

    pathways = {name: (expr, fraction(ranges[name])) for name, (expr, _) in CELLS.items()}
    pathways["video_to_video"] = ("video -> video", until_end(ranges["video_to_question"]))
    pathways["question_to_question"] = ("query -> query", until_end(ranges["question_to_last"]))
    described = ", ".join(
        f"{name} {span[0]}-{span[1] - 1}" if span else f"{name} cut"
        for name, span in ranges.items()
    )
    return EffectivePathway(
        name="auto_pathway",
        title=f"Pathways derived from the flow map at threshold {threshold:g}: {described}",
        pathways=pathways,
        description=f"derived from {ds.attrs.get(keys.RECIPE)} store, threshold {threshold}",
    )


def pathway_curve(
    flow_map: Path,
    thresholds: list[float],
    options: RunOptions,
    loaded: LoadedModel | None = None,
    floor: float | None = None,
) -> pd.DataFrame:
    """Run the derived effective pathways at each threshold (stores under `options.out`), and
    tabulate accuracy against the share of edges kept, beside random cuts of equal budget."""
    ds = open_cube(flow_map)
    # One model for every threshold's run (each run would load its own).
    loaded = loaded or load_run_model(options)
    rows = []
    for threshold in thresholds:
        recipe = derived_recipe(ds, threshold, floor)
        out = Path(options.out or "results/auto_pathway") / f"threshold_{threshold:g}.zarr"
        result = run(recipe, dataclasses.replace(options, out=out, plot=False), loaded=loaded)
        cube = open_cube(result.store)
        # One denominator for the curve and the clean line: every counted sample
        # (summary.accuracy_after).
        after = accuracy_after(cube)
        shares = edge_shares(cube)
        for condition in map(str, cube["condition"].values):
            rows.append(
                {
                    "threshold": threshold,
                    "condition": condition,
                    "accuracy": float(after.sel(condition=condition)),
                    "edges_kept_pct": shares[condition][0],
                    "paper_kept_pct": shares[condition][1],
                    "clean_accuracy": clean_accuracy(cube),
                    "samples": int(counted(cube).sizes["sample"]),
                    "kept_layers": recipe.title.split(": ", 1)[1],
                }
            )
    return pd.DataFrame(rows)


MEASURES = {
    "edges_kept_pct": "edges kept (%), from the first video token on",
    "paper_kept_pct": "edges kept (%) of all causal pairs (the paper's)",
}


# The narrowest x range of the curve, in points of edges kept: thresholds that keep nearly the
# same edges (0.02 points apart on the planted toy) stay side by side instead of filling the
# panel's width, which read as a large difference under crowded ticks.
MIN_SPAN = 10.0
SAME_POINT = 0.5  # points of edges kept within which two points share one label


# Room on each side of the outermost points, as a share of their spread: each point's threshold
# label is centred on it and would spill past the plot's edge.
LABEL_MARGIN = 0.04


def kept_range(values: pd.Series, span: float = MIN_SPAN) -> list[float]:
    """Whole-number [low, high] holding `values` with a label's room on each side, at least
    `span` wide, within [0, 100]."""
    values = values.dropna().astype(float)
    if values.empty:
        return [0.0, 100.0]
    low, high = float(values.min()), float(values.max())
    room = LABEL_MARGIN * (high - low)
    low, high = low - room, high + room
    middle = (low + high) / 2
    low, high = np.floor(min(low, middle - span / 2)), np.ceil(max(high, middle + span / 2))
    if low < 0:
        low, high = 0.0, min(100.0, high - low)
    if high > 100:
        low, high = max(0.0, low - (high - 100)), 100.0
    return [float(low), float(high)]


def curve_chart(table: pd.DataFrame) -> alt.HConcatChart:
    """Accuracy against the share of edges kept, one point per threshold, by flowtrace's count
    and by the paper's side by side. Thresholds that keep the same edges share one point; points
    so near that their labels would overlap (the same accuracy, within SAME_POINT of edges kept)
    share one label naming them all; random cuts share the pathway's points and are not
    labelled."""
    table = table.copy()
    point_keys = ["condition", "edges_kept_pct"]
    named = table.groupby(point_keys, dropna=False)["threshold"].agg(
        lambda t: ", ".join(f"{x:g}" for x in t)
    )  # agg, not transform: transform casts a lone "0.5" back to the column's float
    table = table.merge(named.rename("thresholds").reset_index(), on=point_keys, how="left")
    points = table.drop_duplicates(["condition", "edges_kept_pct"])
    points = points.sort_values(["condition", "accuracy", "edges_kept_pct"]).copy()
    gaps = points.groupby(["condition", "accuracy"])["edges_kept_pct"].diff()
    near = (gaps.isna() | (gaps > SAME_POINT)).cumsum()  # one number per group of near points
    merged = points.groupby(near)["thresholds"].agg(
        lambda labels: ", ".join(sorted(", ".join(labels).split(", "), key=float))
    )
    joined = near.map(merged)
    points["label"] = joined.where(~near.duplicated(), "")  # on the group's first point only
    clean = float(table["clean_accuracy"].iloc[0]) if len(table) else 0.0
    panels = []
    for measure, title in MEASURES.items():
        base = alt.Chart(points).encode(
            x=alt.X(
                f"{measure}:Q",
                title=title,
                scale=alt.Scale(domain=kept_range(points[measure]), nice=False),
                axis=alt.Axis(format="~r"),
            ),
            y=alt.Y("accuracy:Q", title="accuracy (%)", scale=alt.Scale(domain=[0, 100])),
            color=alt.Color("condition:N", title="kept"),
            tooltip=[
                "thresholds",
                "condition",
                alt.Tooltip("accuracy:Q", format=".1f"),
                alt.Tooltip("edges_kept_pct:Q", format=".1f"),
                alt.Tooltip("paper_kept_pct:Q", format=".1f"),
                "kept_layers",
            ],
        )
        rule = (
            alt.Chart(pd.DataFrame({"y": [clean]}))
            .mark_rule(color="gray", strokeDash=[4, 4])
            .encode(y="y:Q")
        )
        labels = (
            base.transform_filter(alt.datum.condition == "pathway")
            .mark_text(dy=-10, angle=0)
            .encode(text="label:N")
        )
        panels.append(
            (base.mark_line(point=True) + labels + rule).properties(width=340, height=260)
        )
    return alt.hconcat(*panels).properties(
        title=alt.TitleParams(
            "Derived effective pathways vs random cuts of the same budget",
            subtitle="label: the thresholds at each point; dashed: clean accuracy",
            anchor="start",
        )
    )
