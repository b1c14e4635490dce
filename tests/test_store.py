"""The store's promises: one writer, only its own folders touched, readers see whole samples,
damage is named, kills lose nothing whole. Writers run in subprocesses where the promise is
about other processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from flowtrace.errors import StoreError
from flowtrace.store import CHUNK_SAMPLES, LOCK, CubeStore, check_store, open_cube
from flowtrace.store.cube import CLEAN_VARIABLES, Schema, Variable

ATTRS = {"recipe": "test", "flowtrace_version": "0"}
SCHEMA = Schema(
    {
        **CLEAN_VARIABLES,
        "value": Variable(("layer",), "float32", np.nan),
        "word": Variable(("layer",), "str", ""),
    },
    {"layer": np.arange(4)},
)

# A writer in another process: sample i holds value i and word "w<i>" in every layer.
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_store import ATTRS, SCHEMA, record
    from flowtrace.store import CubeStore
    path, count = Path(sys.argv[1]), int(sys.argv[2])
    flush, pause = int(sys.argv[3]), float(sys.argv[4])
    with CubeStore(path, ATTRS, schema=SCHEMA, flush_samples=flush, flush_seconds=60) as store:
        print("open", flush=True)
        for i in range(count):
            if str(i) in store.done:
                continue
            store.append(record(i))
            time.sleep(pause)
    """
).format(tests=str(Path(__file__).parent))


def record(i: int):
    r = SCHEMA.empty(str(i))
    r.values["value"][:] = i
    r.values["word"][:] = f"w{i}"
    r.values["clean_prob_pred"][()] = i / 1000
    r.coords["status"] = "ok"
    return r


def writer(path: Path, count: int, flush: int = 1, pause: float = 0.0) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(count), str(flush), str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc


def wait_open(proc: subprocess.Popen) -> None:
    assert proc.stdout.readline().strip() == "open", proc.stderr.read()


def assert_whole(ds: xr.Dataset) -> None:
    """Every sample read is the one its id says, in every array."""
    ids = [int(s) for s in ds["sample"].values]
    assert ids == list(range(len(ids)))
    assert (ds["value"].values == np.asarray(ids)[:, None]).all()
    assert (ds["word"].values == np.asarray([f"w{i}" for i in ids])[:, None]).all()
    assert list(ds["status"].values) == ["ok"] * len(ids)


def test_records_round_trip_in_chunks_of_samples(tmp_path: Path):
    path = tmp_path / "s.zarr"
    with CubeStore(path, ATTRS, schema=SCHEMA, flush_samples=7) as store:
        for i in range(130):
            store.append(record(i))
    ds = open_cube(path)
    assert ds.sizes["sample"] == 130
    assert_whole(ds)
    assert ds["value"].encoding["chunks"] == (CHUNK_SAMPLES, 4)
    # 130 samples → 3 chunks per sample-indexed array, not 130.
    assert sorted(os.listdir(path / "value" / "c")) == ["0", "1", "2"]
    assert check_store(path) == []


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_one_is_taken_over(
    tmp_path: Path,
):
    path = tmp_path / "s.zarr"
    holder = writer(path, 1000, pause=0.05)
    wait_open(holder)
    with pytest.raises(StoreError, match=f"being written by another run \\(pid {holder.pid}"):
        CubeStore(path, ATTRS, schema=SCHEMA)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (path / LOCK).exists()  # left behind by the killed run
    with CubeStore(path, ATTRS, schema=SCHEMA) as store:
        kept = len(store.done)
        assert json.loads((path / LOCK).read_text())["pid"] == os.getpid()
    assert not (path / LOCK).exists()
    assert_whole(open_cube(path)) if kept else None


def test_two_writers_started_together_one_wins(tmp_path: Path):
    path = tmp_path / "s.zarr"
    runs = [writer(path, 40, pause=0.02) for _ in range(2)]
    for run in runs:
        run.wait(timeout=120)
    codes = sorted(r.returncode for r in runs)
    errors = "".join(r.stderr.read() for r in runs)
    assert codes[0] == 0 and codes[1] != 0, errors
    assert "being written by another run" in errors and "Traceback" in errors  # a StoreError
    ds = open_cube(path)
    assert ds.sizes["sample"] == 40
    assert_whole(ds)


def test_folders_flowtrace_did_not_write_are_never_deleted(tmp_path: Path):
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"x": ("t", np.arange(3))}).to_zarr(foreign, zarr_format=3, consolidated=False)
    before = sorted(p.relative_to(foreign) for p in foreign.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="is not a flowtrace store"):
            CubeStore(foreign, ATTRS, overwrite=overwrite, schema=SCHEMA)
    assert sorted(p.relative_to(foreign) for p in foreign.rglob("*")) == before
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "chapter1.tex").write_text("precious")
    with pytest.raises(StoreError, match="is not a flowtrace store"):
        CubeStore(user, ATTRS, overwrite=True, schema=SCHEMA)
    assert (user / "chapter1.tex").read_text() == "precious"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        CubeStore(a_file, ATTRS, overwrite=True, schema=SCHEMA)
    assert a_file.read_text() == "x"


def test_a_flowtrace_store_killed_before_its_first_flush_is_recreated(tmp_path: Path):
    path = tmp_path / "s.zarr"
    proc = writer(path, 1000, flush=10_000)  # never flushes before the kill
    wait_open(proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with CubeStore(path, ATTRS, schema=SCHEMA) as store:
        assert store.done == set()
        store.append([record(0), record(1)])
    assert open_cube(path).sizes["sample"] == 2


def test_readers_polling_during_a_run_always_see_whole_samples(tmp_path: Path):
    path = tmp_path / "s.zarr"
    proc = writer(path, 400, flush=1, pause=0.01)
    wait_open(proc)
    reads = seen = 0
    while proc.poll() is None:
        try:
            ds = xr.open_zarr(path, consolidated=True).load()
        except (FileNotFoundError, ValueError, KeyError) as err:
            # Only before the first flush may the consolidated metadata be absent.
            assert seen == 0, f"read {reads} failed after {seen} samples were whole: {err}"
            continue
        reads += 1
        assert ds.sizes["sample"] >= seen
        seen = ds.sizes["sample"]
        assert_whole(ds)
    assert proc.returncode == 0, proc.stderr.read()
    # The last flush may land after the last poll: one read of the finished store.
    final = xr.open_zarr(path, consolidated=True).load()
    assert_whole(final)
    assert final.sizes["sample"] >= seen
    assert reads > 20 and final.sizes["sample"] == 400


def test_kills_during_flushes_lose_nothing_and_repeat_nothing(tmp_path: Path):
    path = tmp_path / "s.zarr"
    rng = random.Random(1)
    for _ in range(5):
        proc = writer(path, 300, flush=3)
        wait_open(proc)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if (path / "zarr.json").exists():
            with contextlib.suppress(ValueError):  # killed before the first flush
                assert_whole(xr.open_zarr(path, consolidated=True))
    final = writer(path, 300, flush=3)
    assert final.wait(timeout=300) == 0, final.stderr.read()
    ds = open_cube(path)
    assert ds.sizes["sample"] == 300
    assert_whole(ds)
    assert check_store(path) == []


def _chunk(path: Path, name: str, index: str = "1") -> Path:
    return path / name / "c" / index / "0"


def test_damaged_and_missing_chunks_are_named(tmp_path: Path):
    path = tmp_path / "s.zarr"
    with CubeStore(path, ATTRS, schema=SCHEMA) as store:
        store.append([record(i) for i in range(150)])
    chunk = _chunk(path, "value")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern: zstd may still decode it
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="array value, samples 64-127: chunk c/1/0 is damaged"):
        open_cube(path)
    problems = check_store(path)
    assert problems == [f"store {path}: array value, samples 64-127: chunk c/1/0 is damaged"] or (
        len(problems) == 1 and "array value, samples 64-127" in problems[0]
    )
    _chunk(path, "word", "2").unlink()
    with pytest.raises(StoreError, match="array word, samples 128-149: chunk c/2/0 is missing"):
        open_cube(path)
    assert len(check_store(path)) == 2
    _chunk(path, "value").write_bytes(os.urandom(200))
    assert any("array value" in p for p in check_store(path))


def test_resume_refuses_another_run_and_keeps_it(tmp_path: Path):
    path = tmp_path / "s.zarr"
    with CubeStore(path, ATTRS, schema=SCHEMA) as store:
        store.append([record(i) for i in range(3)])
    with pytest.raises(StoreError, match="holds another run"):
        CubeStore(path, {**ATTRS, "recipe": "other"}, schema=SCHEMA)
    assert not (path / LOCK).exists()
    assert open_cube(path).sizes["sample"] == 3
    with CubeStore(path, {**ATTRS, "recipe": "other"}, overwrite=True, schema=SCHEMA) as store:
        assert store.done == set()
        store.append(record(0))
    assert open_cube(path).attrs["recipe"] == "other"


def test_an_out_that_cannot_be_written_is_one_clear_error(tmp_path: Path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(StoreError, match="cannot be written"):
        CubeStore(blocker / "cube.zarr", ATTRS, schema=SCHEMA)


def test_query_and_show_name_a_damaged_chunk(tmp_path: Path):
    """The CLI's readers fail with the damaged array and samples, exit 2, no traceback."""
    from typer.testing import CliRunner

    from flowtrace.cli import app

    path = tmp_path / "s.zarr"
    with CubeStore(path, ATTRS, schema=SCHEMA) as store:
        store.append([record(i) for i in range(70)])
    _chunk(path, "value", "0").write_bytes(os.urandom(64))
    for argv in (["query", str(path), "--mean", "sample"], ["show", str(path)]):
        done = CliRunner().invoke(app, argv)
        assert done.exit_code == 2, done.output
        assert "array value, samples 0-63" in done.output and "Traceback" not in done.output


def test_slow_writes_are_spaced_so_the_writer_takes_a_small_share(tmp_path: Path, monkeypatch):
    """With a write of 0.1 s and a flush due after every sample, flushes come at most once per
    WRITE_PACE × 0.1 s, so the writer is busy ≈5% of the run instead of most of it; nothing is
    lost at close."""
    import flowtrace.store as store_module

    real_write = CubeStore._write
    writes: list[tuple[float, float]] = []

    def slow_write(self, batch):
        started = time.monotonic()
        time.sleep(0.1)
        real_write(self, batch)
        writes.append((started, time.monotonic()))

    monkeypatch.setattr(CubeStore, "_write", slow_write)
    path = tmp_path / "s.zarr"
    began = time.monotonic()
    with CubeStore(path, ATTRS, schema=SCHEMA, flush_samples=1, flush_seconds=0) as store:
        for i in range(60):
            store.append(record(i))
            time.sleep(0.05)  # 3 s of "analysis"
        during = [w for w in writes if w[1] <= time.monotonic()]
        span = time.monotonic() - began
    busy = sum(end - start for start, end in during)
    gaps = [b[0] - a[1] for a, b in zip(during, during[1:], strict=False)]
    # Unpaced, a flush would follow every 0.05 s sample: the writer busy all the time.
    assert len(during) <= 4, f"{len(during)} writes in {span:.1f} s"
    assert busy / span < 0.25, f"writer busy {busy / span:.0%}"
    assert all(g >= store_module.WRITE_PACE * 0.1 * 0.9 for g in gaps), gaps
    assert open_cube(path).sizes["sample"] == 60
