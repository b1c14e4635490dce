"""`flowtrace show` on hand-built stores of each kind: only the settings that kind reads, and a
summary of its values over the analysed samples, checked against numbers worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.store import CubeStore
from flowtrace.store.cube import CLEAN_VARIABLES, Schema, Variable

# What every run records, whatever the kind: the sweep's settings and generate among them.
RUN_ATTRS = {
    "recipe": "hand",
    "model": "toy",
    "frames": 8,
    "window": 3,
    "window_style": "center",
    "heads": "all",
    "generate": 4,
    "sample_mode": "correct",
    "engine": "fast",
    "seed": 0,
    "flowtrace_version": "0",
}
SWEEP_LINES = ("window: 3", "window_style: center", "heads: all")


def _store(path: Path, kind: str, schema: Schema, samples: list[tuple[str, dict]]) -> Path:
    """A store of `kind` holding `samples`: (status, {variable: value}) each."""
    with CubeStore(path, {**RUN_ATTRS, "recipe_kind": kind}, schema=schema) as store:
        for i, (status, values) in enumerate(samples):
            record = schema.empty(f"T/{i:04d}")
            record.coords["status"] = status
            record.coords["clean_correct"] = True
            for name, value in values.items():
                record.values[name][...] = value
            store.append(record)
    return path


def _show(path: Path) -> list[str]:
    done = CliRunner().invoke(app, ["show", str(path)], env={"COLUMNS": "300"})
    assert done.exit_code == 0, done.output
    return done.output.splitlines()


def _row(lines: list[str], name: str) -> list[str]:
    return next(line for line in lines if line.split()[:1] == [name]).split()


PROGRAM = Schema(
    {
        **CLEAN_VARIABLES,
        "p": Variable(("layer", "group"), "float32", np.nan),
        "flipped": Variable(("layer",), "bool", False),
        "reply": Variable((), "str", ""),
    },
    {"layer": [0, 1], "group": ["video", "last"]},
)


def test_a_trace_program_shows_no_sweep_settings_and_its_values_over_analysed_samples(tmp_path):
    p0 = np.array([[0.2, 0.4], [np.nan, 0.6]])
    p1 = np.array([[0.1, np.nan], [0.9, 0.3]])
    path = _store(
        tmp_path / "program.zarr",
        "TraceProgram",
        PROGRAM,
        [
            ("ok", {"p": p0, "flipped": [True, False], "reply": "A"}),
            ("ok", {"p": p1, "flipped": [False, False], "reply": "B"}),
            # A skipped sample's values (had it any) are no part of the summary.
            ("skipped", {"p": 50.0, "flipped": [True, True], "reply": "C"}),
        ],
    )
    lines = _show(path)
    for setting in SWEEP_LINES + ("generate: 4",):
        assert setting not in lines
    assert "engine: fast" in lines and "sample_mode: correct" in lines
    # By hand: the six values present are .2 .4 .6 .1 .9 .3 (mean .4166..); 2 of 8 cells NaN.
    assert _row(lines, "p") == ["p", "layer,group", "0.4167", "0.1", "0.9", "25%"]
    # Flipped in 1 of 4 analysed cells.
    assert _row(lines, "flipped") == ["flipped", "layer", "0.25", "0", "1", "0%"]
    assert _row(lines, "reply") == ["reply", "-", "text,", "2", "distinct"]
    assert any(line.startswith("values over 2 analysed samples") for line in lines)


@pytest.mark.parametrize("kind", ["VideoLogitLens", "AttentionMap", "LayerProbe"])
def test_other_kinds_without_a_sweep_leave_its_settings_out(tmp_path, kind):
    schema = Schema(
        {**CLEAN_VARIABLES, "top_prob": Variable(("layer",), "float32", np.nan)}, {"layer": [0, 1]}
    )
    path = _store(tmp_path / "s.zarr", kind, schema, [("ok", {"top_prob": [0.5, 0.25]})])
    lines = _show(path)
    for setting in SWEEP_LINES + ("generate: 4",):
        assert setting not in lines
    assert _row(lines, "top_prob") == ["top_prob", "layer", "0.375", "0.25", "0.5", "0%"]


KNOCKOUT = Schema(
    {
        **CLEAN_VARIABLES,
        "rel_change_pred": Variable(("layer", "source", "target"), "float32", np.nan),
        "correct": Variable(("layer", "source", "target"), "bool", False),
    },
    {"layer": [0, 1, 2], "source": ["video"], "target": ["last"]},
)


def test_a_knockout_store_keeps_its_sweep_settings_its_table_and_gains_the_values(tmp_path):
    change = [[[-10.0]], [[-40.0]], [[0.0]]]
    path = _store(
        tmp_path / "k.zarr",
        "Knockout",
        KNOCKOUT,
        [("ok", {"rel_change_pred": change, "correct": [[[True]], [[False]], [[True]]]})],
    )
    lines = _show(path)
    for setting in SWEEP_LINES + ("generate: 4",):
        assert setting in lines
    assert _row(lines, "video")[:6] == ["video", "-/->", "last", "-10.0", "-40.0", "0.0"]
    assert _row(lines, "rel_change_pred")[2:5] == ["-16.67", "-40", "0"]


def test_a_flow_map_keeps_the_sweep_but_not_generate(tmp_path):
    path = _store(tmp_path / "f.zarr", "FlowMap", KNOCKOUT, [("ok", {"rel_change_pred": -5.0})])
    lines = _show(path)
    assert "window: 3" in lines and "generate: 4" not in lines


def test_an_effective_pathway_shows_both_shares_of_edges_kept(tmp_path):
    schema = Schema(
        {
            **CLEAN_VARIABLES,
            "rel_change_pred": Variable(("condition",), "float32", np.nan),
            "correct": Variable(("condition",), "bool", False),
            "edges_kept_pct": Variable(("condition",), "float32", np.nan),
            "paper_kept_pct": Variable(("condition",), "float32", np.nan),
            "attention_pairs": Variable((), "float64", np.nan),
        },
        {"condition": ["pathway", "random"]},
    )
    path = _store(
        tmp_path / "e.zarr",
        "EffectivePathway",
        schema,
        [
            ("ok", {"rel_change_pred": [-2, -50], "correct": [True, False],
                    "edges_kept_pct": [20, 20], "paper_kept_pct": [60, 60],
                    "attention_pairs": 100}),
            ("ok", {"rel_change_pred": [-4, -30], "correct": [True, True],
                    "edges_kept_pct": [30, 30], "paper_kept_pct": [40, 40],
                    "attention_pairs": 300}),
        ],
    )  # fmt: skip
    lines = _show(path)
    assert "window: 3" not in lines
    # Accuracy 2/2 and 1/2; change -3 and -40; ours the mean 25; the paper's pooled by pairs:
    # (60*100 + 40*300) / 400 = 45.
    assert _row(lines, "pathway") == ["pathway", "100.0%", "-3.0", "25.0", "45.0"]
    assert _row(lines, "random") == ["random", "50.0%", "-40.0", "25.0", "45.0"]


def test_a_store_with_no_analysed_sample_says_so(tmp_path):
    path = _store(tmp_path / "s.zarr", "TraceProgram", PROGRAM, [("skipped", {})])
    assert "values: no analysed sample" in _show(path)
