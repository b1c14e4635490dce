"""The store lock under races: several processes start together on stores whose lock a killed
run left behind, trial after trial, and never two of them hold one store at once. Also what a
lock file a run cannot read means."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flowtrace.errors import StoreError
from flowtrace.store import LOCK, MARKER
from flowtrace.store.lock import acquire_lock, release_lock

HOLD = 0.004  # seconds a winner holds the lock: long enough for every rival to try meanwhile


def stale_lock(tmp_path: Path) -> bytes:
    """The lock file a run leaves when it is killed while holding its store (the stores here
    are empty ones the killed run made: its marker and its lock)."""
    store = tmp_path / "killed.zarr"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from flowtrace.store.lock import acquire_lock
        Path({str(store)!r}).mkdir()
        acquire_lock(Path({str(store)!r}))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    data = (store / LOCK).read_bytes()
    assert json.loads(data)["pid"]  # it names the killed run
    return data


def contend(root, trials, barrier, holders, doubled, winners) -> None:  # noqa: ANN001
    """One rival: in each trial, try to take the store's lock at the same moment as the others."""
    for trial in range(trials):
        path = root / f"{trial}.zarr"
        barrier.wait()
        try:
            acquire_lock(path)
        except StoreError:
            barrier.wait()
            continue
        with holders.get_lock():
            holders.value += 1
            if holders.value > 1:
                doubled.value += 1
            winners[trial] += 1
        time.sleep(HOLD)
        with holders.get_lock():
            holders.value -= 1
        release_lock(path)
        barrier.wait()


@pytest.mark.parametrize(("rivals", "trials"), [(2, 300), (4, 120)])
def test_runs_racing_for_a_killed_runs_lock_never_both_hold_it(
    tmp_path: Path, rivals: int, trials: int
):
    data = stale_lock(tmp_path)
    for trial in range(trials):
        store = tmp_path / f"{trial}.zarr"
        store.mkdir()
        (store / LOCK).write_bytes(data)
        (store / MARKER).write_text('{"format": 3}')
    # fork: the rivals start in milliseconds (they only open, lock and write small files)
    context = mp.get_context("fork")
    barrier = context.Barrier(rivals)
    holders, doubled = context.Value("i", 0), context.Value("i", 0)
    winners = context.Array("i", trials, lock=False)
    procs = [
        context.Process(target=contend, args=(tmp_path, trials, barrier, holders, doubled, winners))
        for _ in range(rivals)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * rivals
    assert doubled.value == 0, f"two holders at once in {doubled.value} of {trials} trials"
    # The killed run's lock is taken over in every trial (by one rival, or one after another).
    assert min(winners) >= 1
    assert not any((tmp_path / f"{t}.zarr" / LOCK).exists() for t in range(trials))


def test_an_empty_or_unreadable_lock_file_is_taken_over(tmp_path: Path):
    for content in (b"", b"\x00\x17garbage{", b"[1, 2]", b'{"pid": "x"}'):
        store = tmp_path / f"s{len(content)}.zarr"
        store.mkdir()
        (store / LOCK).write_bytes(content)
        assert acquire_lock(store)
        assert json.loads((store / LOCK).read_text())["pid"] == os.getpid()
        release_lock(store)
        assert not (store / LOCK).exists()


HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(120)
    """
)


def test_a_held_lock_whose_holder_has_not_named_itself_is_reported_truthfully(tmp_path: Path):
    """A run that holds the lock but has not written its name yet (it just took it): refused,
    saying so, never as 'pid 0 on ?'."""
    store = tmp_path / "s.zarr"
    store.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store / LOCK)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError) as refused:
            acquire_lock(store)
        message = str(refused.value)
        assert "being written by another run" in message and "has not written its name" in message
        assert "pid 0" not in message and "on ?" not in message
    finally:
        holder.kill()
        holder.wait()
    assert acquire_lock(store)  # its holder gone, the lock is free
    release_lock(store)
