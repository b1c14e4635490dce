"""Where a run writes is settled once, before it starts (pipeline.outputs), and the CLI names
those stores on Ctrl-C; the figures are drawn from the stores after the run."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.errors import OptionError
from flowtrace.pipeline.outputs import settle_outputs
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run


def test_each_recipe_gets_its_store_before_the_run():
    one = settle_outputs(["a"], RunOptions(out=Path("x.zarr")))
    assert one.stores == {"a": Path("x.zarr")} and one.given
    several = settle_outputs(["a", "b"], RunOptions(out=Path("runs")))
    assert several.stores == {"a": Path("runs/a.zarr"), "b": Path("runs/b.zarr")}
    default = settle_outputs(["a", "b"], RunOptions(model="org/My-Model", data="tvbench:/d/tv"))
    a, b = default.stores["a"], default.stores["b"]
    assert not default.given and a.parent == Path("results/a") and b.parent == Path("results/b")
    assert a.name.startswith("My-Model__tv__") and a.name == b.name  # one stamp for the pass
    loaded = settle_outputs(["a"], RunOptions(), model_id="/models/llava").stores["a"]
    assert loaded.name.startswith("llava__toy__")
    with pytest.raises(OptionError, match="^recipes: a, a: each recipe may appear once"):
        settle_outputs(["a", "a"], RunOptions())


def test_figures_are_drawn_only_when_asked(tiny_model_dir, tiny_data, tmp_path):
    common = dict(model=str(tiny_model_dir), data=str(tiny_data), limit=1, device="cpu")
    common["sample_mode"] = "all"  # the tiny random model answers at chance
    bare = run(
        load_recipe("cross_frame"), RunOptions(out=tmp_path / "a.zarr", plot=False, **common)
    )
    assert bare.figures == [] and not (tmp_path / "a.html").exists()
    drawn = run(load_recipe("cross_frame"), RunOptions(out=tmp_path / "b.zarr", **common))
    assert drawn.figures == [tmp_path / "b.html", tmp_path / "b.png"]
    assert all(p.stat().st_size > 0 for p in drawn.figures)


def test_ctrl_c_names_the_runs_own_default_store(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    """Another store of the recipe written meanwhile (newer) is not taken for this run's."""
    import flowtrace.runner

    monkeypatch.chdir(tmp_path)
    real = flowtrace.runner.run
    decoy = Path("results", "cross_frame", "zz-another-run.zarr")

    def run_then_press(recipe, options, progress=None, **kwargs):
        def pressed(done: int, total: int, status: str) -> None:
            decoy.mkdir(parents=True, exist_ok=True)
            later = time.time() + 60
            os.utime(decoy, (later, later))
            raise KeyboardInterrupt

        return real(recipe, options, progress=pressed, **kwargs)

    monkeypatch.setattr(flowtrace.runner, "run", run_then_press)
    argv = f"run cross_frame --model {tiny_model_dir} --data {tiny_data} --limit 2 --device cpu"
    done = CliRunner().invoke(app, shlex.split(argv))
    assert done.exit_code == 130, done.output
    (store,) = [p for p in Path("results", "cross_frame").glob("*.zarr") if p != decoy]
    text = " ".join(done.output.split())
    assert f"interrupted: 1 sample of cross_frame kept in {store}" in text
    assert f"--out {store}" in text and str(decoy) not in text


def test_a_run_without_the_figure_renderer_keeps_its_store_and_says_how(
    tiny_model_dir, tiny_data, tmp_path, monkeypatch
):
    """vl-convert missing (a trimmed container, a GPU node): one warning naming the fix, exit 0,
    the store whole; no traceback after a finished run."""
    import sys

    monkeypatch.setitem(sys.modules, "vl_convert", None)  # its import raises ImportError
    out = tmp_path / "s.zarr"
    args = ["run", "cross_frame", "--model", str(tiny_model_dir), "--data", str(tiny_data)]
    args += ["--limit", "1", "--device", "cpu", "--sample-mode", "all", "--out", str(out)]
    from flowtrace.outputs import OutputWarning

    with pytest.warns(OutputWarning, match="no figures: vl-convert-python cannot be imported"):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and not list(tmp_path.glob("*.html"))
    from flowtrace.store import open_cube

    assert (open_cube(out)["status"] == "ok").all()
