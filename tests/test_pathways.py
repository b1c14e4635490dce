"""Effective pathways derived from a flow map: the rule, the planted ranges, the curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from flowtrace.models import load_model
from flowtrace.pathways.derive import derive_ranges, derived_recipe, pathway_curve
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.tokens.sweep import Sweep


def flow_map_cube(effects: dict[tuple[str, str], list[float]], layers: int) -> xr.Dataset:
    groups = ["system", "frame_0", "frame_1", "question", "option_A", "last"]
    values = np.full((2, layers, len(groups), len(groups)), np.nan)
    for (source, target), per_layer in effects.items():
        values[:, :, groups.index(source), groups.index(target)] = per_layer
    return xr.Dataset(
        {"rel_change_pred": (("sample", "layer", "source", "target"), values)},
        coords={
            "sample": ["a", "b"],
            "status": ("sample", ["ok", "ok"]),
            "layer": np.arange(layers),
            "source": groups,
            "target": groups,
        },
        attrs={"recipe_kind": "FlowMap", "recipe": "flow_map"},
    )


def test_rule_on_a_hand_made_flow_map():
    ds = flow_map_cube(
        {
            ("frame_0", "frame_1"): [-10, -50, -30, 0, 0, 0],
            ("frame_1", "question"): [0, 0, 0, -5, -20, -1],
            ("frame_0", "option_A"): [0, 0, 0, 0, -8, 0],
            ("question", "last"): [0, 0, 0, 0, 0, 0],
            ("frame_0", "last"): [1, 0, 0, 0, 0, 2],
            ("system", "last"): [99, 99, 99, 99, 99, 99],  # in no pathway
        },
        layers=6,
    )
    assert derive_ranges(ds, 0.5) == {
        "cross_frame": (1, 3),
        "video_to_question": (4, 5),
        "question_to_last": None,
        "video_to_last": (0, 6),
    }
    assert derive_ranges(ds, 0.1)["cross_frame"] == (0, 3)
    recipe = derived_recipe(ds, 0.5)
    assert recipe.pathways["cross_frame"] == ("frame[<t] -> frame[t]", (1 / 6, 3 / 6))
    assert recipe.pathways["question_to_last"] == ("query -> last", None)
    assert recipe.kept_layers("video_to_video", 6) == range(0, 5)


def test_noise_floor_drops_faint_layers_unless_lowered():
    faint = {("frame_0", "frame_1"): [-10, -3e-4, 0], ("question", "last"): [0, 0, 0]}
    ds = flow_map_cube(faint, layers=3)
    assert derive_ranges(ds, 1e-6)["cross_frame"] == (0, 1)  # 3e-4 % < NOISE_FLOOR
    assert derive_ranges(ds, 1e-6, floor=1e-4)["cross_frame"] == (0, 2)
    assert derived_recipe(ds, 1e-6, 1e-4).pathways["cross_frame"][1] == (0, 2 / 3)


def test_derived_ranges_are_the_planted_ones(tmp_path: Path, tiny_data: Path):
    """On the planted model (random weights, the shipped rules) the flow map finds the plant."""
    from test_planted import build_planted

    planted = build_planted(tmp_path / "planted", tiny_data)
    options = RunOptions(
        model=str(planted),
        data=str(tiny_data),
        tasks=["Object Count"],
        limit=1,
        sweep=Sweep(window=1),
        sample_mode="all",
        plot=False,
        out=tmp_path / "map.zarr",
    )
    ds = open_cube(run(load_recipe("flow_map"), options).store)
    assert derive_ranges(ds, 1e-4) == {
        "cross_frame": (0, 4),
        "video_to_question": (2, 6),
        "question_to_last": (4, 8),
        "video_to_last": None,
    }


def test_curve_runs_each_threshold_against_random(tiny_model_dir, tiny_data, tmp_path):
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    common = dict(model=str(tiny_model_dir), data=str(tiny_data), limit=2, sample_mode="all")
    flow_map = run(
        load_recipe("flow_map"),
        RunOptions(sweep=Sweep(window=1), plot=False, out=tmp_path / "map.zarr", **common),
        loaded=loaded,
    ).store
    table = pathway_curve(
        flow_map, [0.25, 0.75], RunOptions(out=tmp_path / "auto", **common), loaded
    )
    assert sorted(table["threshold"].unique()) == [0.25, 0.75]
    assert set(table["condition"]) == {"pathway", "random"}
    for _, rows in table.groupby("threshold"):
        kept = rows.set_index("condition")["edges_kept_pct"]
        assert abs(kept["pathway"] - kept["random"]) < 1.0  # the same budget
        assert 0 <= kept["pathway"] <= 100
    kept = table[table.condition == "pathway"].set_index("threshold")["edges_kept_pct"]
    assert kept[0.25] >= kept[0.75]  # a lower threshold keeps more layers
    assert (tmp_path / "auto" / "threshold_0.25.zarr").exists()
    # The paper's share beside it, pooled as the reference pools it: Σ kept pairs / Σ pairs.
    ds = open_cube(tmp_path / "auto" / "threshold_0.25.zarr")
    for condition in ("pathway", "random"):
        at = ds.sel(condition=condition)
        pairs = at["attention_pairs"].values
        want = (at["paper_kept_pct"].values * pairs).sum() / pairs.sum()
        row = table[(table.threshold == 0.25) & (table.condition == condition)].iloc[0]
        assert row["paper_kept_pct"] == pytest.approx(want, rel=1e-6)
        # The system prompt's pairs are never cut: the paper's share is the larger.
        assert row["edges_kept_pct"] < row["paper_kept_pct"] < 100


def test_curve_counts_every_sample_as_the_clean_line(tiny_model_dir, tiny_data, tmp_path):
    """Skipped samples (answered wrong clean, --sample-mode correct) count in the curve as
    wrong, as the reference counts them, over the clean line's denominator: every counted
    sample (by hand)."""
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    common = dict(model=str(tiny_model_dir), data=str(tiny_data), limit=4)
    flow_map = run(
        load_recipe("flow_map"),
        RunOptions(
            sweep=Sweep(window=1),
            plot=False,
            out=tmp_path / "map.zarr",
            sample_mode="all",
            **common,
        ),
        loaded=loaded,
    ).store
    options = RunOptions(out=tmp_path / "auto", sample_mode="correct", **common)
    table = pathway_curve(flow_map, [0.5], options, loaded)
    ds = open_cube(tmp_path / "auto" / "threshold_0.5.zarr")
    status = ds["status"].values
    assert (status == "skipped").any()  # random weights: some clean answers are wrong
    counted = status != "failed"
    clean = ds["clean_correct"].values[counted].astype(float)
    for condition in ("pathway", "random"):
        after = ds["correct"].sel(condition=condition).values[counted].astype(float)
        want = np.where(status[counted] == "ok", after, 0.0).mean() * 100
        row = table.set_index("condition").loc[condition]
        assert row["accuracy"] == pytest.approx(want)
        assert row["clean_accuracy"] == pytest.approx(100 * clean.mean())
        assert row["samples"] == counted.sum()


def test_the_curve_keeps_near_points_apart_from_crowded_ticks_and_labels():
    import pandas as pd

    from flowtrace.pathways.derive import curve_chart

    # Thresholds 0.1 and 0.25 keep 62.91% and 62.89% (the same accuracy), 0.5 keeps 40%. The x
    # range is at least 10 points wide, not the 0.02 between the near points.
    rows = [
        (0.1, 62.91, 77.43, 98.0),
        (0.25, 62.89, 77.42, 98.0),
        (0.5, 40.0, 60.0, 70.0),
    ]
    table = pd.DataFrame(
        [
            {"threshold": t, "condition": c, "accuracy": a, "edges_kept_pct": ours,
             "paper_kept_pct": paper, "clean_accuracy": 100.0, "samples": 8, "kept_layers": ""}
            for t, ours, paper, a in rows
            for c in ("pathway", "random")
        ]
    )  # fmt: skip
    spec = curve_chart(table).to_dict()
    for panel, column in zip(spec["hconcat"], ("edges_kept_pct", "paper_kept_pct"), strict=True):
        low, high = panel["layer"][0]["encoding"]["x"]["scale"]["domain"]
        assert high - low >= 10 and low <= table[column].min() <= table[column].max() <= high
        # The outermost points' labels, centred on them, stay inside: 3% of the spread spare.
        spread = table[column].max() - table[column].min()
        assert low <= table[column].min() - 0.03 * spread, (column, low)
        assert table[column].max() + 0.03 * spread <= high, (column, high)
    data = [r for values in spec["datasets"].values() for r in values if "label" in r]
    labels = sorted(r["label"] for r in data if r["condition"] == "pathway")
    # One label for the two near points (on one of them), one for the far one.
    assert labels == ["", "0.1, 0.25", "0.5"]
