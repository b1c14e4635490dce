"""`random_weights`: a model folder holding config.json and the processor but no checkpoint runs
with seeded random weights (a full-size dry run before downloading), recorded as such; without
the setting the folder is refused with the reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoProcessor

from flowtrace.errors import FlowtraceError
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.toy import EMBEDDED_MODEL
from flowtrace.toy.build import build_config, build_processor

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cross_frame.py"


@pytest.fixture(scope="module")
def config_only(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("config-only")
    tokenizer = AutoProcessor.from_pretrained(EMBEDDED_MODEL).tokenizer
    build_config(tokenizer, layers=4).save_pretrained(folder)
    build_processor(tokenizer).save_pretrained(folder)
    return folder


def analysed(folder: Path, out: Path, **kw):
    options = RunOptions(model=str(folder), out=out, limit=2, sample_mode="all", plot=False, **kw)
    run(load_recipe(RECIPE), options)
    return open_cube(out)


def test_a_config_folder_runs_with_seeded_random_weights(config_only: Path, tmp_path: Path):
    first = analysed(config_only, tmp_path / "a.zarr", random_weights=True)
    again = analysed(config_only, tmp_path / "b.zarr", random_weights=True)
    assert first.attrs["model_revision"] == "random"
    assert (first["status"] == "ok").all() and first.sizes["layer"] == 4
    probs = first["prob_pred"].values
    assert np.isfinite(probs).all() and (probs > 0).all()
    # Seeded: the same weights. Not bitwise: two CPU runs may round a few ulps apart (seen once
    # in a test run, 8e-7 relative); other weights would differ by orders of magnitude more.
    np.testing.assert_allclose(probs, again["prob_pred"].values, rtol=1e-5, atol=0)


def test_without_the_setting_a_folder_without_weights_is_refused(config_only: Path, tmp_path):
    with pytest.raises(FlowtraceError, match="no weights found"):
        analysed(config_only, tmp_path / "c.zarr")


def test_pathways_from_a_random_weights_flow_map(config_only: Path, tmp_path: Path):
    """`flowtrace pathways` runs its threshold curve on the same random-weights model (one model
    for every threshold) when asked, and refuses the weightless folder otherwise."""
    from typer.testing import CliRunner

    from flowtrace.cli import app

    flow_map = tmp_path / "flow_map.zarr"
    options = RunOptions(model=str(config_only), out=flow_map, limit=1, sample_mode="all")
    run(load_recipe("flow_map"), dataclasses.replace(options, plot=False, random_weights=True))
    args = ["pathways", str(flow_map), "--thresholds", "0.5", "--limit", "1", "--device", "cpu"]
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert refused.exit_code != 0 and "no weights found" in " ".join(refused.output.split())
    done = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--random-weights"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "b" / "curve.csv").read_text().count("\n") >= 2
    # The flow map analysed every sample, so the curve's runs do too: a dry run whose noise
    # answers are wrong must still run its pathways (it skipped them all, under "correct").
    ran = open_cube(tmp_path / "b" / "threshold_0.5.zarr")
    assert ran.attrs["sample_mode"] == "all" and list(ran["status"].values) == ["ok"]
    assert np.isfinite(ran["edges_kept_pct"].values).all()
    told = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "c"), "--random-weights", "--sample-mode", "correct"]
    )
    assert told.exit_code == 0, told.output
    assert open_cube(tmp_path / "c" / "threshold_0.5.zarr").attrs["sample_mode"] == "correct"
    # Another sample mode into the same folder is another run: refused, naming the way out.
    again = [*args, "--out", str(tmp_path / "b"), "--random-weights", "--sample-mode", "correct"]
    refused = CliRunner().invoke(app, again)
    assert refused.exit_code == 2 and "--overwrite" in " ".join(refused.output.split())
    assert CliRunner().invoke(app, [*again, "--overwrite"]).exit_code == 0
    assert open_cube(tmp_path / "b" / "threshold_0.5.zarr").attrs["sample_mode"] == "correct"
    mixed = CliRunner().invoke(app, [*args, "--find", "--sample-mode", "all"])
    assert mixed.exit_code == 2 and "drop --sample-mode" in " ".join(mixed.output.split())


def test_a_dry_run_that_skips_samples_says_how_to_run_them_all(config_only: Path, tmp_path: Path):
    """Random weights answer by chance, so the default sample mode skips most samples and runs
    no knockout on them: the run says so, and how to time them all."""
    from typer.testing import CliRunner

    from flowtrace.cli import app

    args = ["run", str(RECIPE), "--model", str(config_only), "--random-weights", "--limit", "4"]
    told = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a.zarr")])
    assert told.exit_code == 0, told.output
    skipped = int((open_cube(tmp_path / "a.zarr")["status"] == "skipped").sum())
    assert skipped > 0  # this seed's noise answers some wrong: the case the line is for
    said = " ".join(told.output.split())
    assert f"{skipped} of 4 samples were skipped by --sample-mode correct" in said
    assert "pass --sample-mode all" in said
    every = CliRunner().invoke(app, [*args, "--sample-mode", "all", "--out", str(tmp_path / "b")])
    assert every.exit_code == 0 and "answer by chance" not in every.output
    # The library says it too: the runner warns, the CLI prints.
    from flowtrace.runner import DryRunWarning

    with pytest.warns(DryRunWarning, match=f"{skipped} of 4 samples were skipped"):
        # The same store, resumed: the runner counts its skipped samples again.
        options = RunOptions(model=str(config_only), out=tmp_path / "a.zarr", limit=4, plot=False)
        run(load_recipe(RECIPE), dataclasses.replace(options, random_weights=True))
