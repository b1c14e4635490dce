"""A run killed with SIGKILL at any moment resumes to exactly the cube of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["run", "recipes/cross_frame.py", "--limit", "24", "--sample-mode", "all"]


def flowtrace(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "flowtrace", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_kill_and_resume_gives_the_uninterrupted_cube(tmp_path: Path):
    clean_out, resumed_out = tmp_path / "clean.zarr", tmp_path / "resumed.zarr"
    done = flowtrace(*ARGS, "--out", str(clean_out))
    assert done.wait(timeout=300) == 0, done.stderr.read()
    rng = random.Random(0)
    partial_sizes = []
    for _ in range(3):
        run = flowtrace(*ARGS, "--out", str(resumed_out))
        time.sleep(rng.uniform(3.0, 7.0))  # model loading takes ~3 s; samples then ~0.2 s each
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
        if resumed_out.exists():
            partial = xr.open_zarr(resumed_out)  # always opens, with whole samples only
            ids = [str(s) for s in partial["sample"].values]
            assert len(ids) == len(set(ids))
            partial_sizes.append(len(ids))
    assert any(0 < n < 24 for n in partial_sizes), partial_sizes  # the kills did land mid-run
    final = flowtrace(*ARGS, "--out", str(resumed_out))
    assert final.wait(timeout=300) == 0, final.stderr.read()
    a, b = xr.open_zarr(clean_out), xr.open_zarr(resumed_out)
    assert list(a["sample"].values) == list(b["sample"].values)  # none lost, none repeated
    for name in ("prob_pred", "rel_change_pred", "clean_prob_pred"):
        assert np.allclose(a[name].values, b[name].values, equal_nan=True, atol=1e-6), name
    assert list(a["status"].values) == list(b["status"].values)


def test_a_store_of_another_run_is_refused(tmp_path: Path):
    out = tmp_path / "cube.zarr"
    first = flowtrace("run", "recipes/cross_frame.py", "--limit", "2", "--out", str(out))
    assert first.wait(timeout=300) == 0
    other = flowtrace(
        "run", "recipes/cross_frame.py", "--limit", "2", "--window", "1", "--out", str(out)
    )
    assert other.wait(timeout=300) != 0
    message = other.stderr.read()
    assert "holds another run" in message and "window: 3 there, 1 now" in message
    again = flowtrace(
        "run",
        "recipes/cross_frame.py",
        "--limit",
        "2",
        "--window",
        "1",
        "--out",
        str(out),
        "--overwrite",
    )
    assert again.wait(timeout=300) == 0
    assert int(xr.open_zarr(out).attrs["window"]) == 1
