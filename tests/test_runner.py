"""Runner + store: the cube read back by plain xarray equals an independent computation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from plain_reference import plain_knockout_probs

from flowtrace.data import read_frames, read_samples
from flowtrace.models import load_model
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.tokens.sweep import Sweep


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


def test_store_round_trip_equals_plain_knockout(loaded, tiny_model_dir, tiny_data, tmp_path):
    recipe = load_recipe("recipes/cross_frame.py")
    out = tmp_path / "cube.zarr"
    options = RunOptions(
        model=str(tiny_model_dir),
        data=str(tiny_data),
        limit=3,
        out=out,
        sample_mode="all",
        sweep=Sweep(window=3),
        plot=False,
    )
    result = run(recipe, options, loaded=loaded)
    assert result.counts["ok"] == 3
    ds = xr.open_zarr(out)
    assert ds["prob_pred"].dims == ("sample", "layer", "source", "target")
    assert list(ds["source"].values) == ["earlier_frames"]
    assert list(ds["target"].values) == ["frame"]
    assert ds.attrs["recipe"] == "cross_frame" and ds.attrs["window"] == 3
    for key in ("model_revision", "adapter", "dtype", "pooling", "git_commit", "device", "created"):
        assert ds.attrs[key], key
    assert ds.attrs["pooling"] == "8-4-4"
    samples = {s.id: s for s in read_samples(tiny_data)}
    for sample_id in ds["sample"].values:
        sample = samples[str(sample_id)]
        row = ds.sel(sample=sample_id, source="earlier_frames", target="frame")
        assert row["task"].item() == sample.task
        assert json.loads(row["candidates"].item()) == list(sample.candidates)
        prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
        ids = prepared.inputs["input_ids"][0]
        video = (ids == loaded.processor.video_token_id).nonzero()[:, 0].tolist()
        frames = [video[t * 16 : (t + 1) * 16] for t in range(8)]
        pairs = [(frames[t], [p for f in frames[:t] for p in f]) for t in range(1, 8)]
        clean = plain_knockout_probs(loaded.model, prepared.inputs, [], [])
        pred = int(clean.argmax())
        assert row["clean_prob_pred"].item() == pytest.approx(float(clean[pred]), abs=1e-6)
        for layer in (0, 2):
            want = plain_knockout_probs(
                loaded.model, prepared.inputs, pairs, Sweep(window=3).window_at(layer, 4)
            )
            got = row.sel(layer=layer)
            assert got["prob_pred"].item() == pytest.approx(float(want[pred]), abs=1e-5)
            change = 100 * (float(want[pred]) - float(clean[pred])) / float(clean[pred])
            assert got["rel_change_pred"].item() == pytest.approx(change, abs=1e-2)


def test_bad_samples_are_recorded_and_the_run_goes_on(loaded, tiny_model_dir, tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    annotations = data / "json" / "moving_direction.json"
    entries = json.loads(annotations.read_text())
    (data / "video" / "moving_direction" / entries[0]["video"]).unlink()
    entries[1]["answer"] = "sideways"
    annotations.write_text(json.dumps(entries))
    out = tmp_path / "cube.zarr"
    options = RunOptions(
        model=str(tiny_model_dir),
        data=str(data),
        tasks=["Moving Direction", "Object Color"],
        out=out,
        sample_mode="all",
        plot=False,
    )
    result = run(load_recipe("recipes/cross_frame.py"), options, loaded=loaded)
    assert result.counts["failed"] == 2 and result.counts["ok"] == 2
    ds = xr.open_zarr(out)
    status = dict(zip(ds["sample"].values, ds["status"].values, strict=True))
    reasons = " | ".join(str(r) for r in ds["reason"].values)
    assert sorted(status.values()) == ["failed", "failed", "ok", "ok"]
    assert "not found" in reasons and "sideways" in reasons
    failed = ds.isel(sample=ds["status"].values == "failed")
    assert bool(np.isnan(failed["prob_pred"]).all())
