"""Bad input that tests/test_errors.py's table cannot hold (issue 33): a resume after an annotation
edit, two quick Ctrl-Cs, and the checks behind its rows compared with values computed here."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.errors import FlowtraceError, ModelError, OptionError
from flowtrace.pipeline.options import RunOptions, check_options, settle

ROOT = Path(__file__).resolve().parents[1]


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode() + file.read_bytes())
    return digest.hexdigest()


def _questions(store: Path) -> dict[str, str]:
    ds = xr.open_zarr(store)
    return {str(s): str(q) for s, q in zip(ds["sample"].values, ds["question"].values, strict=True)}


def test_a_resume_after_an_annotation_edit_is_refused_and_the_store_kept(
    tiny_model_dir: Path, tiny_data: Path, tmp_path: Path
):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    out = tmp_path / "out.zarr"
    argv = shlex.split(
        f"run cross_frame --model {tiny_model_dir} --data {data} --device cpu --limit 2 "
        f"--sample-mode all --out {out}"
    )
    runner = CliRunner()
    first = runner.invoke(app, argv)
    assert first.exit_code == 0, first.output
    asked = _questions(out)
    # Edit the annotation entry of the first stored sample: the same id, another question.
    sample_id = sorted(asked)[0]
    edited = None
    for file in (data / "json").glob("*.json"):
        entries = json.loads(file.read_text())
        for entry in entries:
            if edited is None and entry["question"] == asked[sample_id]:
                entry["question"] = edited = asked[sample_id] + " Count again."
        file.write_text(json.dumps(entries))
    assert edited is not None
    before = _digest(out)

    again = runner.invoke(app, argv)
    assert again.exit_code == 2, again.output
    lines = [line for line in again.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: store"), again.output
    flat = " ".join(again.output.split())
    assert "changed since it was analysed" in flat and "Count again." in flat
    assert _digest(out) == before  # nothing written, nothing lost

    replaced = runner.invoke(app, [*argv, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert _questions(out)[sample_id] == edited


def test_an_unedited_resume_goes_on(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path):
    out = tmp_path / "out.zarr"
    argv = shlex.split(
        f"run cross_frame --model {tiny_model_dir} --data {tiny_data} --device cpu --limit 2 "
        f"--out {out}"
    )
    runner = CliRunner()
    assert runner.invoke(app, argv).exit_code == 0
    again = runner.invoke(app, argv)
    assert again.exit_code == 0 and "resumed: 2 samples were already in" in again.output


# The second Ctrl-C of a quick double press, sent by the process itself where it is most
# likely to land: while the stores save what was analysed, or while the report reads them.
DOUBLE_PRESS = """
import os, signal, sys
import flowtrace.runner
import flowtrace.store
import flowtrace.store.writer

where = sys.argv.pop(1)
real_run = flowtrace.runner.run


def run(recipe, options, progress=None, **kwargs):
    def pressed(done, total, status):
        if progress:
            progress(done, total, status)
        if done == 1:
            os.kill(os.getpid(), signal.SIGINT)  # the first press, after one sample

    return real_run(recipe, options, progress=pressed, **kwargs)


flowtrace.runner.run = run
if where == "save":
    real_close = flowtrace.store.writer.CubeStore.close

    def close(self):
        os.kill(os.getpid(), signal.SIGINT)
        return real_close(self)

    flowtrace.store.writer.CubeStore.close = close
else:
    real_open = flowtrace.store.open_cube

    def open_cube(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_open(*args, **kwargs)

    flowtrace.store.open_cube = open_cube
from flowtrace.cli import app

app(prog_name="flowtrace")
"""


@pytest.mark.parametrize("second_press", ["save", "report"])
def test_two_quick_ctrl_cs_keep_the_sample_and_print_the_resume_command(
    second_press: str, tiny_model_dir: Path, tiny_data: Path, tmp_path: Path
):
    script = tmp_path / "double_press.py"
    script.write_text(DOUBLE_PRESS)
    out = tmp_path / "out.zarr"
    argv = (
        f"run cross_frame --model {tiny_model_dir} --data {tiny_data} --device cpu --limit 3 "
        f"--sample-mode all --out {out}"
    )
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, str(script), second_press, *shlex.split(argv)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"interrupted: 1 sample of cross_frame kept in {out}" in done.stderr
    assert "resume with: flowtrace run cross_frame" in done.stderr
    assert "saving the samples analysed; the resume command follows" in done.stderr
    assert xr.open_zarr(out).sizes["sample"] == 1  # the sample analysed before the presses
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # ours is restored


def test_ctrl_c_handling_is_put_back_after_a_run(tiny_model_dir: Path, tiny_data: Path, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    argv = f"run cross_frame --model {tiny_model_dir} --data {tiny_data} --limit 1 --out {tmp_path}"
    assert CliRunner().invoke(app, shlex.split(argv + "/o")).exit_code == 0
    assert signal.getsignal(signal.SIGINT) is before


def test_run_bounds_are_refused_before_anything_loads():
    for bad, option in (
        (RunOptions(frames=1025), "frames"),
        (RunOptions(generate=8193), "generate"),
        (RunOptions(seed=2**32), "seed"),
        (RunOptions(seed=-1), "seed"),
    ):
        with pytest.raises(OptionError) as caught:
            check_options(bad)
        assert caught.value.option == option
    for good in (RunOptions(frames=1024), RunOptions(generate=8192), RunOptions(seed=2**32 - 1)):
        check_options(good)


def test_the_context_bounds_frames_and_replies():
    # 16 video tokens a frame in a context of 1024: 64 frames fill it; 63 leave 16 tokens.
    def settled(**given):
        return settle(
            RunOptions(**given), 4, 2, 8, lambda f: f, True, lambda f: 16 * f, context=1024
        )

    assert settled(frames=63).frames == 63
    with pytest.raises(OptionError, match="64 frames make 1024 video tokens") as caught:
        settled(frames=64)
    assert caught.value.option == "frames"
    assert settled(frames=8, generate=1024 - 128 - 1).frames == 8
    with pytest.raises(OptionError, match="give at most 895") as caught:
        settled(frames=8, generate=1024 - 128)
    assert caught.value.option == "generate"
    # No context known (a config without max_position_embeddings): only the fixed bounds hold.
    assert settle(RunOptions(frames=500), 4, 2, 8, lambda f: f, True).frames == 500


def test_a_mistyped_local_path_is_named_at_once_without_the_hub(tmp_path: Path, monkeypatch):
    from flowtrace.models import load_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "llava-7b").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for typed, missing in (
        ("./checkpoints/llava-7", "checkpoints/llava-7"),
        ("checkpoints/llava-7", "checkpoints/llava-7"),  # under a folder that exists here
        ("../nowhere-at-all/model", "../nowhere-at-all"),
        (f"{tmp_path}/chekpoints/llava-7b", f"{tmp_path}/chekpoints"),
    ):
        started = time.monotonic()
        with pytest.raises(ModelError) as caught:
            load_model(typed, device="cpu")
        assert time.monotonic() - started < 2
        assert f"no such folder: {missing} does not exist" in str(caught.value)
    with pytest.raises(ModelError, match=r"its folder holds llava-7b"):
        load_model("./checkpoints/llava-7", device="cpu")


def test_a_forced_adapter_still_serves_a_config_no_adapter_reads():
    from flowtrace.models import pick_adapter

    renamed = {"model_type": "my_llava_finetune"}
    assert pick_adapter(renamed, "llava_next_video", "x").name == "llava_next_video"
    same = {"model_type": "llava_next_video"}
    assert pick_adapter(same, "llava_next_video", "x").name == "llava_next_video"
    with pytest.raises(FlowtraceError, match="the llava_next_video adapter reads, not pllava"):
        pick_adapter(same, "pllava", "x")


def test_every_non_finite_config_value_is_found(tmp_path: Path):
    from flowtrace.models.checkpoint import read_config

    for text, where in (
        ('{"a": 1, "text_config": {"rope_theta": Infinity}}', "text_config.rope_theta"),
        ('{"image_grid_pinpoints": [[32, 32], [NaN, 2]]}', "image_grid_pinpoints.1.0"),
        ('{"x": -Infinity}', "x"),
    ):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ModelError, match=f"holds (nan|inf|-inf) at {where};"):
            read_config(str(tmp_path))
    (tmp_path / "config.json").write_text('{"eps": 1e-06, "layers": [1, 2.5]}')
    assert read_config(str(tmp_path)) == {"eps": 1e-06, "layers": [1, 2.5]}
