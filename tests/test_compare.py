"""Comparisons never drop a run: stores labelled by their path, --label, collisions refused;
--var, --sel task=…, --y-range and per-task panels on plot and query (issue 34)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.errors import FlowtraceError
from flowtrace.plots.stores import stores_chart
from flowtrace.reading.query import query, store_labels
from flowtrace.store import open_cube

ROOT = Path(__file__).resolve().parents[1]
TOY, PLANTED = ROOT / "results/toy/vql_to_ql.zarr", ROOT / "results/planted/vql_to_ql.zarr"


def test_labels_are_paths_from_the_common_folder_and_collisions_are_refused(tmp_path):
    a, b = tmp_path / "toy" / "x.zarr", tmp_path / "planted" / "x.zarr"
    assert list(store_labels([a, b])) == ["toy/x", "planted/x"]
    one = tmp_path / "threshold_0.25.zarr", tmp_path / "threshold_0.5.zarr"
    assert list(store_labels(one)) == ["threshold_0.25", "threshold_0.5"]  # dots kept
    assert list(store_labels([a])) == ["x"]
    assert list(store_labels([a, b], ["t", "p"])) == ["t", "p"]
    with pytest.raises(FlowtraceError, match="labels=x: names two stores"):
        store_labels([a, a])
    with pytest.raises(FlowtraceError, match="labels=t: names two stores"):
        store_labels([a, b], ["t", "t"])
    with pytest.raises(FlowtraceError, match="1 labels for 2 stores"):
        store_labels([a, b], ["t"])


def _lines(chart) -> set[str]:
    rows = [row for values in chart.to_dict()["datasets"].values() for row in values]
    return {row["run"] for row in rows if "run" in row}


def test_plot_of_two_same_named_stores_shows_both(tmp_path):
    out = tmp_path / "both"
    done = CliRunner().invoke(app, ["plot", str(TOY), str(PLANTED), "--out", str(out)])
    assert done.exit_code == 0, done.output
    html = out.with_suffix(".html").read_text()
    assert '"toy/vql_to_ql"' in html and '"planted/vql_to_ql"' in html
    assert _lines(stores_chart([TOY, PLANTED])) == {"toy/vql_to_ql", "planted/vql_to_ql"}
    same = CliRunner().invoke(app, ["plot", str(TOY), str(TOY), "--out", str(out)])
    assert same.exit_code == 2 and "--label vql_to_ql: names two stores" in same.output
    named = tmp_path / "named"
    args = ["plot", str(TOY), str(PLANTED), "--label", "a", "--label", "b", "--out", str(named)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert _lines(stores_chart([TOY, PLANTED], ["a", "b"])) == {"a", "b"}


def test_query_labels_runs_by_path_and_selects_a_task():
    table = query([TOY, PLANTED], {"task": ["Object Count"]}, ["sample"], ["rel_change_pred"])
    assert set(table["run"]) == {"toy/vql_to_ql", "planted/vql_to_ql"}
    ds = open_cube(PLANTED)
    keep = (ds["status"].values == "ok") & (ds["task"].values == "Object Count")
    want = np.nanmean(ds["rel_change_pred"].sel(source="video", target="question").values[keep], 0)
    got = table[(table.run == "planted/vql_to_ql") & (table.source == "video")]
    got = got[got.target == "question"].sort_values("layer")["rel_change_pred"].to_numpy()
    assert np.allclose(got, want, atol=1e-5)
    with pytest.raises(FlowtraceError, match="^sel=task=Nope: not in"):
        query([TOY], {"task": ["Nope"]}, [], None)


def test_table_selects_a_task_or_says_what_it_can_select():
    ds = open_cube(TOY)
    table = ds.flowtrace.table("rel_change_pred", task="Moving Direction", source="video")
    keep = (ds["status"].values == "ok") & (ds["task"].values == "Moving Direction")
    want = np.nanmean(ds["rel_change_pred"].sel(source="video").values[keep], 0)
    got = table.set_index(["layer", "target"])["rel_change_pred"]
    for t, target in enumerate(map(str, ds["target"].values)):
        for layer in range(ds.sizes["layer"]):
            assert got[(layer, target)] == pytest.approx(want[layer, t], nan_ok=True)
    with pytest.raises(
        FlowtraceError, match="table.colour=….: the store has dims .* per-sample coordinates .*task"
    ):
        ds.flowtrace.table("rel_change_pred", colour="red")


def test_plot_var_sel_y_range_and_per_task_panels(tmp_path):
    out = tmp_path / "fig"
    args = [
        "plot",
        str(TOY),
        "--var",
        "rel_change_true",
        "--sel",
        "task=Moving Direction|Event Order",
    ]
    args += ["--y-range", "-100,20", "--by-task", "--out", str(out)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    chart = stores_chart(
        [TOY],
        None,
        "rel_change_true",
        {"task": ["Moving Direction", "Event Order"]},
        (-100, 20),
        by_task=True,
    )
    spec = chart.to_dict()
    rows = [row for values in spec["datasets"].values() for row in values]
    assert {row["task"] for row in rows if "task" in row} == {"Moving Direction", "Event Order"}
    assert '"domain": [-100, 20]' in json.dumps(spec)
    # Bands never leave the measure's range: a relative change of p is at least -100%.
    assert min(row["low"] for row in rows if "low" in row) >= -100
    ds = open_cube(TOY)
    keep = (ds["status"].values == "ok") & (ds["task"].values == "Event Order")
    curve = ds["rel_change_true"].sel(source="video", target="last").values[keep].mean(0)
    mine = pd.DataFrame([r for r in rows if r.get("task") == "Event Order" and "mean" in r])
    mine = mine[mine.condition == "video -/-> last"].sort_values("layer")["mean"].to_numpy()
    assert np.allclose(mine, curve, atol=1e-4)
    bad = CliRunner().invoke(app, ["plot", str(ROOT / "results/toy/gen_prob.zarr"), "--var", "x"])
    assert bad.exit_code == 2 and "draws its own variables" in bad.output


def test_a_comparison_figure_takes_a_name_of_its_own(tmp_path):
    """`flowtrace plot a b` without --out: a figure named after both in their common folder,
    not the first store's own figure (which drawing `a` alone wrote, and which stays)."""
    import shutil

    a, b = tmp_path / "runs" / "toy.zarr", tmp_path / "runs" / "planted.zarr"
    shutil.copytree(TOY, a)
    shutil.copytree(PLANTED, b)
    alone = CliRunner().invoke(app, ["plot", str(a)])
    assert alone.exit_code == 0, alone.output
    own = (tmp_path / "runs" / "toy.html").read_bytes()
    both = CliRunner().invoke(app, ["plot", str(a), str(b)])
    assert both.exit_code == 0, both.output
    compared = tmp_path / "runs" / "compare_toy-vs-planted.html"
    assert '"toy"' in compared.read_text() and '"planted"' in compared.read_text()
    assert (tmp_path / "runs" / "toy.html").read_bytes() == own
