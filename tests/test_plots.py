"""Figures: one accuracy denominator (issue 18 item 1), the chart registry and its fallback."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import altair as alt
import numpy as np
import pytest
import xarray as xr

import flowtrace.plots as plots
from flowtrace.plots import (
    CHARTS,
    chart_for,
    flow_map_table,
    generic_chart,
    knockout_summary,
    pathway_chart,
    register_chart,
)
from flowtrace.reading.summary import accuracy_after, clean_accuracy, knockout_table

LAYERS = [0, 1]


def _cube(status, clean_correct, correct) -> xr.Dataset:
    """A knockout cube by hand: `correct[s][l]` per sample and layer for one edge; samples
    that are not `ok` hold NaN effects and False `correct`, as the runner writes them."""
    status = np.array(status)
    correct = np.array(correct, dtype=bool)[:, :, None, None]
    ok = (status == "ok")[:, None, None, None]
    effect = np.where(ok, -10.0, np.nan) * np.ones(correct.shape)
    n = len(status)
    return xr.Dataset(
        {
            "correct": (("sample", "layer", "source", "target"), correct & ok),
            "rel_change_pred": (("sample", "layer", "source", "target"), effect),
        },
        coords={
            "sample": [f"T/{i:04d}" for i in range(n)],
            "layer": LAYERS,
            "source": ["video"],
            "target": ["last"],
            "status": ("sample", status),
            "clean_correct": ("sample", np.array(clean_correct, dtype=bool)),
            "task": ("sample", ["T"] * n),
        },
        attrs={"recipe_kind": "Knockout", "recipe_title": "by hand", "window": 1},
    )


# --sample-mode correct: two of four answers flipped, so two are skipped (clean answer wrong);
# both analysed samples stay right at layer 0, one turns wrong at layer 1; one more sample
# failed (no answer at all: in neither denominator).
FLIPPED = _cube(
    ["ok", "ok", "skipped", "skipped", "failed"],
    [True, True, False, False, False],
    [[True, True], [True, False], [False, False], [False, False], [False, False]],
)
EXPECTED = {0: 50.0, 1: 25.0}  # right analysed / 4 counted samples


def _old_formula(ds: xr.Dataset) -> dict[int, float]:
    # Before issue 18: the mean over analysed samples only.
    ok = ds.isel(sample=ds["status"].values == "ok")
    per_layer = ok["correct"].sel(source="video", target="last").mean("sample")
    return {int(layer): 100 * float(per_layer.sel(layer=layer)) for layer in LAYERS}


def test_accuracy_after_knockout_is_over_every_counted_sample():
    assert clean_accuracy(FLIPPED) == 50.0
    after = accuracy_after(FLIPPED).sel(source="video", target="last")
    assert {layer: float(after.sel(layer=layer)) for layer in LAYERS} == EXPECTED
    # The formula it replaces gives 100% against a 50% clean line: it fails this check.
    assert _old_formula(FLIPPED) == {0: 100.0, 1: 50.0} != EXPECTED
    table = knockout_summary(FLIPPED)
    assert dict(zip(table["layer"], table["accuracy"], strict=True)) == EXPECTED
    assert set(table["n"]) == {2}  # the effect's mean stays over the analysed samples


def _reference_accuracy(clean_right, new_right, mode):
    """The reference code's accuracy after a knockout (analysis/information_flow_analysis.py),
    transcribed: every sample counts in cnt_samples; those the sample mode skips are never run,
    so only the analysed samples' new answers add 1 / cnt_samples * 100."""
    acc_new, cnt_samples, results = 0.0, 0, []
    for clean, new in zip(clean_right, new_right, strict=True):
        cnt_samples += 1
        if mode == "correct" and not clean:
            continue
        if mode == "wrong" and clean:
            continue
        results.append(new)
    for new in results:
        if new:
            acc_new += 1 / cnt_samples * 100
    return acc_new


@pytest.mark.parametrize("mode", ["correct", "wrong", "all"])
def test_accuracy_after_follows_the_reference_in_every_sample_mode(mode):
    clean_right = [True, True, True, False, False, False]
    # Answers under the knockout at layers 0 and 1, had each sample been run.
    new_right = [[True, False], [False, False], [True, True], [False, True], [True, False]]
    new_right.append([False, False])
    analysed = [{"correct": c, "wrong": not c, "all": True}[mode] for c in clean_right]
    status = ["ok" if a else "skipped" for a in analysed]
    ds = _cube(status, clean_right, new_right)
    after = accuracy_after(ds).sel(source="video", target="last")
    for layer in LAYERS:
        want = _reference_accuracy(clean_right, [n[layer] for n in new_right], mode)
        assert float(after.sel(layer=layer)) == pytest.approx(want)
    assert clean_accuracy(ds) == 50.0  # the reference's acc_base: every counted sample
    # --sample-mode wrong skips the clean-right samples: before, they counted at their clean
    # answer (right), 50 points above the reference here.
    if mode == "wrong":
        assert [float(after.sel(layer=layer)) for layer in LAYERS] == pytest.approx(
            [100 / 6, 100 / 6]
        )


def test_knockout_figure_panel_and_clean_line_share_the_denominator():
    spec = chart_for(FLIPPED).to_dict()
    rows = [row for values in spec["datasets"].values() for row in values]
    accuracy = {row["layer"]: row["accuracy"] for row in rows if "accuracy" in row}
    assert accuracy == EXPECTED
    # The dashed clean line is drawn from each row's `clean` (per task in per-task panels).
    assert {row["clean"] for row in rows if "clean" in row} == {50.0}
    assert "mean(clean)" in json.dumps(spec) or '"clean"' in json.dumps(spec)
    text = json.dumps(spec)
    assert "over all 4 counted samples (skipped ones count as wrong, as in the reference)" in text


def test_flow_map_summary_and_pathway_use_the_same_denominator():
    table = flow_map_table(FLIPPED)
    assert dict(zip(table["layer"], table["accuracy"], strict=True)) == EXPECTED
    with warnings.catch_warnings():
        # Fewer layers than thirds: an empty third is NaN in the table, not a numpy warning.
        warnings.simplefilter("error", RuntimeWarning)
        lines = knockout_table(FLIPPED)
    row = next(line for line in lines if line.startswith("video -/-> last"))
    assert row.endswith("50.0%")  # worst layer is 0 (all tied): 2 right of 4 counted
    # The cube holds -10 for every analysed sample; layers 0 and 1 are the first two thirds.
    assert row.split()[3:6] == ["-10.0", "-10.0", "nan"], row
    pathway = FLIPPED.isel(layer=0, source=0, target=0, drop=True)
    pathway = pathway.expand_dims(condition=["kept"]).transpose("sample", "condition")
    pathway["edges_kept_pct"] = xr.full_like(pathway["rel_change_pred"], 40.0)
    pathway.attrs["recipe_kind"] = "EffectivePathway"
    rows = next(iter(pathway_chart(pathway, "p").to_dict()["datasets"].values()))
    assert {r["run"]: r["accuracy"] for r in rows} == {"clean": 50.0, "kept": 50.0}


def _toy_copy(tmp_path: Path, flip: int) -> Path:
    """The embedded held-out split's first 4 Object Color samples, `flip` answers changed."""
    from flowtrace.toy import EMBEDDED_DATA as source

    root = tmp_path / "flipped"
    (root / "json").mkdir(parents=True)
    shutil.copytree(source / "video" / "object_color", root / "video" / "object_color")
    items = json.loads((source / "json" / "object_color.json").read_text())[:4]
    for item in items[:flip]:
        item["answer"] = next(c for c in item["candidates"] if c != item["answer"])
    (root / "json" / "object_color.json").write_text(json.dumps(items))
    return root


def test_toy_data_with_two_answers_flipped_shows_half_not_all(tmp_path):
    # The check on a real run: the toy model answers all four right, so flipping two
    # answers skips them; the panel must sit at or under the 50% clean line, not at 100%.
    from flowtrace.recipe import load_recipe
    from flowtrace.runner import RunOptions, run
    from flowtrace.store import open_cube

    data = _toy_copy(tmp_path, flip=2)
    options = RunOptions(model="toy", data=str(data), out=tmp_path / "s.zarr", plot=False)
    ds = open_cube(run(load_recipe("cross_frame"), options).store)
    assert list(ds["status"].values).count("skipped") == 2
    assert clean_accuracy(ds) == 50.0
    ok = ds.isel(sample=ds["status"].values == "ok")
    right = ok["correct"].isel(source=0, target=0).sum("sample").values  # per layer, of 2
    table = knockout_summary(ds)
    assert list(table["accuracy"]) == [100 * r / 4 for r in right]
    assert max(table["accuracy"]) <= 50.0 < 100.0


def test_every_shipped_kind_has_its_figure_and_unknown_kinds_a_generic_one():
    assert set(CHARTS) >= {
        "Knockout",
        "FlowMap",
        "LayerProbe",
        "VideoLogitLens",
        "EffectivePathway",
        "AttentionMap",
    }
    assert CHARTS["FlowMap"] is plots.flow_map_chart and CHARTS["Knockout"] is plots.knockout_chart
    ds = FLIPPED.copy()
    ds.attrs["recipe_kind"] = "Patching"
    spec = chart_for(ds).to_dict()
    assert spec["mark"]["type"] == "line" and spec["encoding"]["x"]["field"] == "layer"


def test_generic_figure_of_two_categorical_dims_is_a_heatmap():
    grid = np.arange(6.0).reshape(1, 2, 3)
    ds = xr.Dataset(
        {"mass": (("sample", "target", "source"), grid)},
        coords={
            "sample": ["a"],
            "target": ["q", "last"],
            "source": ["f0", "f1", "q"],
            "status": ("sample", ["ok"]),
        },
        attrs={"recipe_kind": "SomethingNew"},
    )
    spec = chart_for(ds).to_dict()
    assert spec["mark"]["type"] == "rect"
    rows = next(iter(spec["datasets"].values()))
    cell = {(r["target"], r["source"]): r["mean"] for r in rows}
    assert cell[("last", "f1")] == 4.0 and len(cell) == 6


def test_register_chart_adds_a_kind_and_refuses_to_overwrite_silently():
    def mine(ds: xr.Dataset, title: str) -> alt.Chart:
        return alt.Chart(title=f"mine: {title}").mark_point()

    ds = FLIPPED.copy()
    ds.attrs["recipe_kind"] = "MyKind"
    try:
        register_chart("MyKind", mine)
        assert chart_for(ds).to_dict()["title"] == "mine: by hand"
        with pytest.raises(ValueError, match="replace=True"):
            register_chart("MyKind", generic_chart)
        register_chart("MyKind", generic_chart, replace=True)
        assert chart_for(ds).to_dict()["mark"]["type"] == "line"
    finally:
        CHARTS.pop("MyKind", None)
    with pytest.raises(ValueError, match="kind"):
        register_chart("", mine)


def test_public_names_stay_importable_from_flowtrace_plots():
    for name in [
        "knockout_summary",
        "knockout_chart",
        "flow_map_table",
        "flow_map_chart",
        "head_chart",
        "save_chart",
        "gen_prob_chart",
        "accuracy_chart",
        "pathway_chart",
        "video_lens_chart",
        "attention_chart",
        "chart_for",
        "compare_chart",
        "register_chart",
        "Z95",
    ]:
        assert hasattr(plots, name), name
