"""A pathway's frontier (flowtrace.pathways.discovery, step 6): accuracy with the first k cells of
an
elimination order cut, against random cuts of the same per-layer budget; its table and chart.
The knockouts of a path's prefixes are run here for the selection too (`prefix_outcomes`)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd
import torch
import xarray as xr

from flowtrace.engine import KnockoutCondition
from flowtrace.models import LoadedModel
from flowtrace.pathways.cells import Cell, FitSample, cut_plan, is_right, keeps
from flowtrace.tokens.edge_plans import random_plan
from flowtrace.tokens.edge_share import causal_pairs, kept_shares, pooled


def prefix_outcomes(
    loaded: LoadedModel,
    engine,
    items: Sequence[FitSample],
    elimination: Sequence[Cell],
    points: Sequence[int],
    ratio: float | None = None,
    seeds: int = 0,
) -> dict[str, np.ndarray]:
    """Per point k × sample, with the first k cells of `elimination` cut (one knockout call per
    sample): "correct", "prob_true" and the shares of edges kept ("edges_kept_pct",
    "paper_kept_pct"); "passes" (the acceptance test, `keeps` with `ratio`; a sample wrong
    clean, or no `ratio`, passes: there is nothing to keep); and "random_correct" (point × seed
    × sample) under `seeds` random cuts of each point's per-layer budget."""
    layers = loaded.num_layers
    n, m = len(points), len(items)
    correct = np.zeros((n, m), dtype=bool)
    p_true = np.zeros((n, m), dtype=np.float32)
    passes = np.ones((n, m), dtype=bool)
    random_correct = np.zeros((n, seeds, m), dtype=bool)
    kept = np.zeros((n, m), dtype=np.float32)
    paper = np.zeros((n, m), dtype=np.float32)
    for s, item in enumerate(items):
        conditions = []
        for i, k in enumerate(points):
            plan = cut_plan(item, set(elimination[:k]), layers)
            kept[i, s], paper[i, s] = kept_shares(plan, item.counted, layers)
            budget = {layer: int((cut & item.counted).sum()) for layer, cut in plan.items()}
            conditions.append(KnockoutCondition(plan))
            for seed in range(seeds):
                generator = torch.Generator().manual_seed(1000 * seed + i)
                conditions.append(KnockoutCondition(random_plan(item.counted, budget, generator)))
        probs = engine.knockout(item.inputs, conditions) if conditions else []
        for i in range(n):
            row = probs[i * (seeds + 1)]
            correct[i, s] = is_right(item, row, loaded)
            p_true[i, s] = float(row[item.clean.true_id])
            if ratio is not None and item.clean.correct:
                passes[i, s] = keeps(item, row, loaded, ratio)
            for seed in range(seeds):
                random_correct[i, seed, s] = is_right(
                    item, probs[i * (seeds + 1) + 1 + seed], loaded
                )
    return {
        "correct": correct,
        "prob_true": p_true,
        "passes": passes,
        "random_correct": random_correct,
        "edges_kept_pct": kept,
        "paper_kept_pct": paper,
    }


def frontier(
    loaded: LoadedModel,
    engine,
    items: Sequence[FitSample],
    elimination: Sequence[Cell],
    points: Sequence[int],
    seeds: int = 5,
) -> xr.Dataset:
    """Accuracy on `items` with the first k cells of `elimination` cut (k in `points`), and under
    random cuts of the same per-layer budget, `seeds` draws each: a point × seed × sample cube."""
    layers = loaded.num_layers
    out = prefix_outcomes(loaded, engine, items, elimination, points, seeds=seeds)
    ids = [it.sample.id for it in items]
    return xr.Dataset(
        {
            "correct": (("point", "sample"), out["correct"]),
            "prob_true": (("point", "sample"), out["prob_true"]),
            "random_correct": (("point", "seed", "sample"), out["random_correct"]),
            "edges_kept_pct": (("point", "sample"), out["edges_kept_pct"]),
            "paper_kept_pct": (("point", "sample"), out["paper_kept_pct"]),
            "attention_pairs": (
                ("sample",),
                np.array([causal_pairs(it.layout.seq_len) * layers for it in items], float),
            ),
            "clean_correct": (("sample",), np.array([it.clean.correct for it in items])),
        },
        coords={
            "point": np.arange(len(points)),
            "cells_cut": ("point", np.asarray(points)),
            "seed": np.arange(seeds),
            "sample": ids,
            "task": ("sample", [it.sample.task for it in items]),
        },
    )


def frontier_table(cube: xr.Dataset) -> pd.DataFrame:
    """Per point: share kept, accuracy, random accuracy (mean, min, max over seeds), clean.

    Every accuracy is over the same samples, every one of them (one denominator)."""
    random = 100 * cube["random_correct"].astype(float).mean("sample")
    # The paper's share (edge_share), pooled over samples as the reference pools it; a cube
    # written before it was recorded has none (edge_share.paper_from_counted converts).
    paper = (
        [
            pooled(cube["paper_kept_pct"].isel(point=i).values, cube["attention_pairs"].values)
            for i in range(cube.sizes["point"])
        ]
        if "paper_kept_pct" in cube
        else np.full(cube.sizes["point"], np.nan)
    )
    return pd.DataFrame(
        {
            "cells_cut": cube["cells_cut"].values,
            "edges_kept_pct": cube["edges_kept_pct"].mean("sample").values,
            "paper_kept_pct": paper,
            "accuracy": 100 * cube["correct"].astype(float).mean("sample").values,
            "random_mean": random.mean("seed").values,
            "random_min": random.min("seed").values,
            "random_max": random.max("seed").values,
            "random_std": random.std("seed").values,
            "clean_accuracy": 100 * float(cube["clean_correct"].astype(float).mean()),
        }
    )


def frontier_chart(table: pd.DataFrame, title: str) -> alt.LayerChart:
    """Accuracy against the share of edges kept: the found path, random cuts with their spread."""
    x = alt.X("edges_kept_pct:Q", title="attention edges kept (%)", scale=alt.Scale(reverse=True))
    y = alt.Y("accuracy:Q", title="held-out accuracy (%)", scale=alt.Scale(domain=[0, 100]))
    found = (
        alt.Chart(table)
        .mark_line(point=True, color="#1f77b4")
        .encode(
            x=x,
            y=y,
            tooltip=["cells_cut", "edges_kept_pct", "paper_kept_pct", "accuracy", "random_mean"],
        )
    )
    band = (
        alt.Chart(table)
        .mark_area(opacity=0.25, color="#ff7f0e")
        .encode(x=x, y="random_min:Q", y2="random_max:Q")
    )
    random = (
        alt.Chart(table)
        .mark_line(point=True, color="#ff7f0e", strokeDash=[4, 3])
        .encode(x=x, y=alt.Y("random_mean:Q"))
    )
    clean = (
        alt.Chart(table.head(1))
        .mark_rule(color="gray", strokeDash=[2, 2])
        .encode(y="clean_accuracy:Q")
    )
    return (band + random + found + clean).properties(
        width=420,
        height=280,
        title=alt.TitleParams(
            title,
            subtitle="blue: found pathway; orange: random cuts, same per-layer budget "
            "(line: mean, band: min-max over seeds); gray: clean",
        ),
    )
