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


def stored(path: Path) -> int:
    try:
        return xr.open_zarr(path, consolidated=True).sizes["sample"]
    except (FileNotFoundError, ValueError):
        return 0


def kill_when(run: subprocess.Popen, out: Path, samples: int, deadline: float = 120.0) -> None:
    """SIGKILL `run` as soon as the store holds `samples` samples (or it ends by itself)."""
    started = time.monotonic()
    while run.poll() is None and stored(out) < samples:
        assert time.monotonic() - started < deadline, "the run made no progress"
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)


def test_kill_and_resume_gives_the_uninterrupted_cube(tmp_path: Path):
    clean_out, resumed_out = tmp_path / "clean.zarr", tmp_path / "resumed.zarr"
    done = flowtrace(*ARGS, "--out", str(clean_out))
    assert done.wait(timeout=300) == 0, done.stderr.read()
    # Kill while loading, then after a random number of stored samples (so kills land at random
    # points inside later samples' writes), three times, then let it finish.
    starting = flowtrace(*ARGS, "--out", str(resumed_out))
    time.sleep(0.5)
    starting.send_signal(signal.SIGKILL)
    starting.wait(timeout=60)
    rng = random.Random(0)
    for target in sorted(rng.sample(range(1, 24), 3)):
        kill_when(flowtrace(*ARGS, "--out", str(resumed_out)), resumed_out, target)
        partial = xr.open_zarr(resumed_out, consolidated=True)  # whole samples only
        ids = [str(s) for s in partial["sample"].values]
        assert len(ids) == len(set(ids)) and target <= len(ids) <= 24
    final = flowtrace(*ARGS, "--out", str(resumed_out))
    assert final.wait(timeout=300) == 0, final.stderr.read()
    a, b = xr.open_zarr(clean_out), xr.open_zarr(resumed_out)
    assert list(a["sample"].values) == list(b["sample"].values)  # none lost, none repeated
    # Bitwise equality across processes is not promised on CPU (BLAS kernels may take another
    # path for another memory alignment): a few float32 ulps of p (~6e-8 near 1) differ. The
    # tolerance is 1e-6 of a probability, so 1e-4 for rel_change, which is in percent; both
    # stay far below the smallest gap between two samples' rows, so a sample stored at
    # another's place or computed from another's input still fails.
    for name, atol in (("prob_pred", 1e-6), ("rel_change_pred", 1e-4), ("clean_prob_pred", 1e-6)):
        rows = a[name].values.reshape(a.sizes["sample"], -1)
        gaps = np.abs(rows[:, None] - rows[None, :]).max(-1)[~np.eye(len(rows), dtype=bool)]
        assert atol < np.nanmin(gaps) / 4, (name, np.nanmin(gaps))
        assert np.allclose(a[name].values, b[name].values, equal_nan=True, atol=atol, rtol=0), name
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
