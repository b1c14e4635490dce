"""Whose store it is: the creation marker, and the lock a writing run holds (pid, host, process
start, command), taken over when its process is gone."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from flowtrace.errors import StoreError
from flowtrace.store.arrays import STORE_FORMAT

MARKER = ".flowtrace-store"  # written at creation: this folder is a store flowtrace started


LOCK = ".flowtrace-lock"  # held by the run writing the store


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not
    taken for the holder; "" where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or process_start(pid) in ("", start)


def acquire_lock(path: Path) -> bool:
    lock = path / LOCK
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": process_start(os.getpid()),
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300],
    }
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if not holder:  # being written by a process that is taking it right now
                time.sleep(0.05)
                holder = read_json(lock)
            same_host = holder.get("host") == me["host"]
            pid = int(holder.get("pid", 0) or 0)
            if same_host and pid == me["pid"]:
                raise StoreError(
                    f"store {path} is already open for writing in this process; close it first"
                ) from None
            if same_host and pid and not alive(pid, str(holder.get("start", ""))):
                # A dead holder (killed run): take its lock over. The rename makes the take-over
                # atomic when two runs find the same stale lock.
                stale = lock.with_name(f"{LOCK}.stale.{me['pid']}")
                try:
                    os.rename(lock, stale)
                    stale.unlink()
                except FileNotFoundError:
                    pass
                continue
            where = f"pid {pid} on {holder.get('host', '?')}"
            hint = "" if same_host else f"; if that run is gone, delete {lock}"
            raise StoreError(
                f"store {path} is being written by another run ({where}, since "
                f"{holder.get('since', '?')}: {holder.get('command', '?')}); wait for it or "
                f"choose another out{hint}"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    raise StoreError(f"store {path}: could not take its lock {lock}; try again")


def release_lock(path: Path) -> None:
    lock = path / LOCK
    holder = read_json(lock)
    if holder.get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_marker(path: Path) -> None:
    marker = {"format": STORE_FORMAT, "created": dt.datetime.now(dt.UTC).isoformat()}
    tmp = path / f"{MARKER}.{os.getpid()}"
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, path / MARKER)


def is_flowtrace_store(path: Path) -> bool:
    """Whether flowtrace started this folder (its marker), or wrote it before markers existed."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    attrs = read_json(path / "zarr.json").get("attributes", {})
    return "flowtrace_version" in attrs and "recipe" in attrs


def clear_store(path: Path) -> None:
    """Delete a flowtrace store's contents, keeping its lock and marker."""
    for child in path.iterdir():
        if child.name in (LOCK, MARKER):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
