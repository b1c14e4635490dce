"""Scale-out: Ray-sharded runs equal the serial run; traces through a simulated server equal local.

One local Ray cluster (2 CPUs) serves the module: starting Ray and its workers is the slow part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from plain_reference import plain_knockout_probs
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.data import read_frames, read_samples
from flowtrace.engine import remote
from flowtrace.errors import FlowtraceError, OptionError
from flowtrace.models import load_model
from flowtrace.pipeline.options import check_options
from flowtrace.recipe import RECIPES_DIR, load_recipe, recipe_files
from flowtrace.runner import RunOptions, run
from flowtrace.scale.ray_executor import WORKER_PREFIX
from flowtrace.tokens.sweep import Sweep

# Differ between any two runs of the same analysis; everything else in the store must not (the
# store's checksums cover these attributes too).
RUN_ATTRS = {"created", "executor", "traces", "flowtrace_checksums"}


def options(model: Path, data: Path, out: Path, **changes) -> RunOptions:
    base = RunOptions(
        model=str(model),
        data=str(data),
        out=out,
        device="cpu",
        dtype="float32",
        sample_mode="all",
        sweep=Sweep(window=3),
        plot=False,
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def assert_same_cube(got: xr.Dataset, want: xr.Dataset) -> None:
    """Same samples in the same order, same layout, same values (float32 tolerance)."""
    assert list(got["sample"].values) == list(want["sample"].values)
    assert dict(got.sizes) == dict(want.sizes)
    assert set(got.variables) == set(want.variables)
    for name in want.variables:
        a, b = got[name], want[name]
        assert a.dims == b.dims, name
        assert a.encoding.get("chunks") == b.encoding.get("chunks"), name
        if b.dtype.kind == "f":
            np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            assert (a.values == b.values).all(), name
    differ = {k for k in {*got.attrs, *want.attrs} if got.attrs.get(k) != want.attrs.get(k)}
    assert differ <= RUN_ATTRS, differ


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def serial_cube(loaded, tiny_model_dir, tiny_data, tmp_path_factory) -> xr.Dataset:
    out = tmp_path_factory.mktemp("serial") / "cube.zarr"
    recipe = load_recipe("recipes/cross_frame.py")
    run(recipe, options(tiny_model_dir, tiny_data, out), loaded=loaded)
    return xr.open_zarr(out).load()


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_run_equals_the_serial_run(
    ray_cluster, serial_cube, loaded, tiny_model_dir, tiny_data, tmp_path
):
    out = tmp_path / "ray.zarr"
    seen: list[tuple[int, int, str]] = []
    result = run(
        load_recipe("recipes/cross_frame.py"),
        options(tiny_model_dir, tiny_data, out, executor="ray", workers=2),
        progress=lambda done, total, status: seen.append((done, total, status)),
    )
    total = len(read_samples(tiny_data))
    assert result.counts["ok"] == total and result.retried == 0
    # Progress counts samples over all workers, one call per sample, up to the total.
    assert [done for done, _, _ in seen] == list(range(1, total + 1))
    assert {t for _, t, _ in seen} == {total}
    ds = xr.open_zarr(out)
    assert_same_cube(ds.load(), serial_cube)
    assert ds.attrs["executor"] == "ray (2 workers)"
    # And against a plain forward written without flowtrace: the clean answer's probability.
    first = read_samples(tiny_data)[0]
    prepared = loaded.adapter.prepare(loaded, first, read_frames(first.video, 8))
    probs = plain_knockout_probs(loaded.model, prepared.inputs, [], [])
    stored = ds.sel(sample=first.id)["clean_prob_pred"].item()
    assert stored == pytest.approx(float(probs.max()), rel=1e-5)


def test_a_ray_resume_after_an_annotation_edit_is_refused(
    ray_cluster, loaded, tiny_model_dir, tiny_data, tmp_path
):
    """As the serial pass: a stored sample whose question changed since is not resumed over."""
    import json
    import shutil

    from flowtrace.errors import StoreError

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    out = tmp_path / "ray.zarr"
    recipe = load_recipe("recipes/cross_frame.py")
    run(recipe, options(tiny_model_dir, data, out, limit=2), loaded=loaded)
    stored = {str(q) for q in xr.open_zarr(out)["question"].values}
    for file in (data / "json").glob("*.json"):
        entries = json.loads(file.read_text())
        for entry in entries:
            if entry["question"] in stored:
                entry["question"] += " Count again."
        file.write_text(json.dumps(entries))
    with pytest.raises(StoreError, match="changed since it was analysed"):
        run(recipe, options(tiny_model_dir, data, out, executor="ray", workers=1, limit=2))
    assert xr.open_zarr(out).sizes["sample"] == 2  # nothing written over


def test_killed_workers_lose_no_sample_and_resume_still_holds(
    ray_cluster, serial_cube, loaded, tiny_model_dir, tiny_data, tmp_path
):
    recipe = load_recipe("recipes/cross_frame.py")
    out = tmp_path / "ray.zarr"

    class Stop(Exception):
        pass

    def stop_after_three(done: int, total: int, status: str) -> None:
        if done == 3:
            raise Stop

    # A serial run stopped after three samples leaves a store for the Ray run to resume.
    with pytest.raises(Stop):
        run(recipe, options(tiny_model_dir, tiny_data, out), stop_after_three, loaded=loaded)
    assert xr.open_zarr(out).sizes["sample"] == 3

    killed: list[str] = []
    before = set(ray_cluster.util.list_named_actors())

    def kill_the_workers(done: int, total: int, status: str) -> None:
        # At the first new sample the worker that sent it still holds a queued one (the other
        # may still be loading): kill every worker, as a lost node would.
        if status != "resumed" and not killed:
            names = set(ray_cluster.util.list_named_actors()) - before
            for name in sorted(n for n in names if n.startswith(WORKER_PREFIX)):
                ray_cluster.kill(ray_cluster.get_actor(name), no_restart=True)
                killed.append(name)

    result = run(
        recipe,
        options(tiny_model_dir, tiny_data, out, executor="ray", workers=2),
        progress=kill_the_workers,
    )
    assert killed and result.resumed == 3
    assert result.retried >= 1  # the killed workers' queued samples ran on their replacements
    assert_same_cube(xr.open_zarr(out).load(), serial_cube)


def test_a_bad_option_stops_a_ray_run_with_one_clear_error(
    ray_cluster, tiny_model_dir, tiny_data, tmp_path
):
    bad = options(tiny_model_dir, tiny_data, tmp_path / "x.zarr", executor="ray", workers=1)
    bad.sweep = Sweep(window=99)  # checked against the model, so only a worker can find it
    # The worker's OptionError comes back whole: the library names the parameter, the CLI the flag.
    with pytest.raises(OptionError, match=r"^window: 99: must be between 1 and 4") as raised:
        run(load_recipe("recipes/cross_frame.py"), bad)
    assert raised.value.option == "window"
    assert not (tmp_path / "x.zarr").exists()


# ---- remote traces ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eager(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32", attn="eager")


@pytest.mark.parametrize("name", [p.stem for p in recipe_files()])
def test_every_recipe_gives_the_local_cube_through_a_simulated_server(
    name, loaded, eager, tiny_model_dir, tiny_data, tmp_path
):
    recipe = load_recipe(RECIPES_DIR / f"{name}.py")
    model = eager if name == "attention_map" else loaded
    cubes = []
    for serve in (None, remote.SIMULATED):
        out = tmp_path / f"{serve}.zarr"
        chosen = options(tiny_model_dir, tiny_data, out, limit=1, engine="reference", serve=serve)
        if serve and not getattr(recipe, "remote", True):
            # A trace program that calls the model's modules itself runs only where the model is.
            with pytest.raises(FlowtraceError, match="runs the model's modules itself"):
                run(recipe, chosen, loaded=model)
            return
        if getattr(recipe, "generate", 0):
            # Replies keep a K/V cache between traces: refused remotely, scored without them.
            if serve:
                with pytest.raises(FlowtraceError, match="generate: 32 with remote/serve"):
                    run(recipe, chosen, loaded=model)
            chosen.generate = 0
        run(recipe, chosen, loaded=model)
        cubes.append(xr.open_zarr(out).load())
    local, simulated = cubes
    assert simulated.attrs["traces"] == "simulated-server"
    assert_same_cube(simulated, local)


def test_a_simulated_server_runs_a_remote_safe_trace_like_local(loaded, tiny_data):
    """The clean pass saves a top-level tensor and references only the model: remote-safe."""
    from flowtrace.engine import ReferenceEngine

    sample = read_samples(tiny_data)[0]
    inputs = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8)).inputs
    engine = ReferenceEngine(loaded)
    local = engine.clean(inputs)
    remote.route_traces(loaded, {"remote": remote.SIMULATED})
    try:
        assert isinstance(loaded.nnsight.trace.keywords["backend"], remote.ServerSimulation)
        simulated = engine.clean(inputs)
    finally:
        remote.route_traces(loaded, {})
    assert "trace" not in loaded.nnsight.__dict__  # routing undone: local traces again
    torch.testing.assert_close(simulated, local, rtol=0, atol=0)
    # Independent of flowtrace's trace: a plain forward of the same inputs.
    torch.testing.assert_close(simulated, plain_knockout_probs(loaded.model, inputs, [], []))


def test_a_simulated_server_refuses_what_a_real_server_cannot_run(loaded):
    model = loaded.nnsight
    ids = torch.tensor([[1, 2, 3, 4]])
    remote.route_traces(loaded, {"remote": remote.SIMULATED})
    try:
        # A flowtrace object in the body: it would have to be imported on the server.
        with pytest.raises(ModuleNotFoundError, match="flowtrace"), model.trace(input_ids=ids):
            layers = loaded.layers(model)  # noqa: F841 - the body references `loaded`
            logits = model.output.logits.save()
        # A tensor saved into a list made outside the block stays on the server.
        kept = []
        with model.trace(input_ids=ids):
            kept.append(model.output.logits.save())
            logits = model.output.logits.save()
    finally:
        remote.route_traces(loaded, {})
    assert kept == [] and logits.shape[:2] == (1, 4)


def test_remote_options_are_checked_before_any_work(monkeypatch, tiny_model_dir):
    from nnsight import CONFIG

    def kwargs(**changes) -> tuple[dict, str]:
        given = RunOptions(**{"model": str(tiny_model_dir), **changes})
        check_options(given)  # the settings' one room of checks
        return remote.remote_trace_kwargs(given)

    assert kwargs() == ({}, "local")
    with pytest.raises(OptionError, match="^remote: model=.* is not a Hugging Face id"):
        kwargs(remote=True)  # a local folder: no server hosts it
    with pytest.raises(OptionError, match="^serve: http://gpu-box:5001 with remote=True: choose"):
        kwargs(remote=True, serve="http://gpu-box:5001")
    with pytest.raises(OptionError, match="^executor: ray with serve=local"):
        kwargs(serve="local", executor="ray")
    with pytest.raises(OptionError, match="^serve: gpu-box:5001: give the server's URL"):
        kwargs(model="llava-hf/LLaVA-NeXT-Video-7B-hf", serve="gpu-box:5001")
    hub = {"model": "llava-hf/LLaVA-NeXT-Video-7B-hf"}
    assert kwargs(**hub, serve="http://gpu-box:5001/") == (
        {"remote": "http://gpu-box:5001"},
        "serve:http://gpu-box:5001",
    )
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    with pytest.raises(FlowtraceError, match="NDIF_API_KEY"):
        kwargs(**hub, remote=True)
    monkeypatch.setattr(CONFIG.API, "APIKEY", "secret-key-123")
    trace_kwargs, label = kwargs(**hub, remote=True)
    assert trace_kwargs == {"remote": True}
    assert label == f"ndif:{CONFIG.API.HOST}" and "secret" not in label


def test_ray_settings_are_checked_before_any_work():
    with pytest.raises(OptionError, match="^device: cuda:1 with executor=ray"):
        check_options(RunOptions(executor="ray", device="cuda:1"))
    with pytest.raises(OptionError, match="^gpus_per_worker: 0: must be above 0"):
        check_options(RunOptions(executor="ray", gpus_per_worker=0))
    with pytest.raises(OptionError, match="^workers: 0: must be at least 1"):
        check_options(RunOptions(executor="ray", workers=0))
    with pytest.raises(OptionError, match="^executor: ray runs one recipe at a time"):
        check_options(RunOptions(executor="ray"), recipes=2)
    check_options(RunOptions(executor="ray", device="cuda"))


def test_cli_lists_the_scale_options_and_refuses_remote_toy():
    runner = CliRunner()
    help_text = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    flags = ("--executor", "--address", "--gpus-per-worker", "--workers", "--remote", "--serve")
    for flag in flags:
        assert flag in help_text, flag
    done = runner.invoke(app, ["run", "recipes/cross_frame.py", "--remote"])
    assert done.exit_code == 2
    # The library's setting names said as flags.
    assert "error: --remote: --model toy is not a Hugging Face id" in done.output
    assert "use --serve local" in done.output
    done = runner.invoke(app, ["run", "cross_frame", "--serve", "local", "--executor", "ray"])
    assert "error: --executor ray with --serve local: the server runs the model" in done.output
    assert "drop --executor" in done.output
