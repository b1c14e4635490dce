"""Whose store it is: the creation marker, and the lock a writing run holds.

The lock is an `flock` on `.flowtrace-lock`, taken on a file kept open for the writer's life.
Taking a free lock is one atomic system call, and the kernel drops it when its process ends,
however it ends: a killed run's lock is free at once, with no stale-lock take-over that two runs
could race. The file also names its holder (pid, host, process start, command) for the refusal.

A run may take its stores' locks before it loads its model (`reserved`); the store then adopts
the lock its process already holds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flowtrace.errors import StoreError
from flowtrace.store.arrays import STORE_FORMAT

MARKER = ".flowtrace-store"  # written at creation: this folder is a store flowtrace started


LOCK = ".flowtrace-lock"  # held by the run writing the store


HOLDER_WAIT = 1.0  # seconds a refused run waits for a new holder to write its name


@dataclass
class Held:
    """A store lock this process holds: the open file it is taken on."""

    fd: int
    created: list[Path] = field(default_factory=list)  # folders made to hold it
    reserved: bool = False  # taken ahead of the store (`reserved`), not yet adopted


_HELD: dict[Path, Held] = {}
_GUARD = threading.Lock()


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


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def check_out(path: Path) -> None:
    """Refuse a `path` that cannot be a store of flowtrace's: a file, a folder inside another
    store, or a folder flowtrace did not make."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"store {path} is a file, not a store folder; choose another out")
    for parent in Path(os.path.realpath(path)).parents:
        if (parent / MARKER).is_file():
            raise StoreError(
                f"store {path} lies inside the flowtrace store {parent}; choose an out outside it"
            )
    # A lock file alone is a run's that was killed before it made the store.
    if path.is_dir() and {p.name for p in path.iterdir()} - {LOCK} and not is_flowtrace_store(path):
        raise StoreError(
            f"store {path} exists and is not a flowtrace store (it has no {MARKER} marker: "
            "flowtrace did not make it, though it may hold data read from a store); it is left "
            "untouched: choose another out"
        )


def acquire_lock(path: Path, reserve: bool = False) -> bool:
    """Take the store's lock for this process, making its folder if needed, or adopt the lock
    this process reserved for it; raises StoreError naming the holder if another run has it."""
    path = Path(path)
    with _GUARD:
        held = _HELD.get(_key(path))
        if held is not None and held.reserved and not reserve:
            held.reserved = False
            return True
        if held is not None:
            raise StoreError(
                f"store {path} is already open for writing in this process; close it first"
            )
        created: list[Path] = []
        try:
            check_out(path)
            created = [p for p in (path, *path.parents) if not p.exists()]
            path.mkdir(parents=True, exist_ok=True)
            fd = _take(path)
        except OSError as err:  # no permission, a file where a folder should be, a full disk
            _remove_empty(created)
            raise StoreError(
                f"store {path} cannot be written ({err.strerror or err}); choose another out"
            ) from None
        except BaseException:
            _remove_empty(created)
            raise
        _HELD[_key(path)] = Held(fd, created, reserve)
        return True


def release_lock(path: Path, remove: bool = True) -> None:
    """Give the store's lock back, its file removed while still held, so no later run locks a
    file that is no longer the store's lock (`remove=False`: the file went with the folder)."""
    with _GUARD:
        held = _HELD.pop(_key(path), None)
    if held is None:
        return
    if remove:
        with contextlib.suppress(OSError):
            os.unlink(Path(path) / LOCK)
    os.close(held.fd)
    if held.reserved:  # never used: leave no folder the run made for nothing
        _remove_empty(held.created)


@contextlib.contextmanager
def reserved(paths: Iterable[Path]) -> Iterator[None]:
    """Hold the stores' locks for a block (the run, from before its model loads), so a store
    another run writes is refused first; a store opened in the block adopts its lock."""
    taken: list[Path] = []
    try:
        for path in dict.fromkeys(Path(p) for p in paths):
            acquire_lock(path, reserve=True)
            taken.append(path)
        yield
    finally:
        for path in taken:
            with _GUARD:
                held = _HELD.get(_key(path))
                unused = held is not None and held.reserved
            if unused:
                release_lock(path)


def _take(path: Path) -> int:
    lock = path / LOCK
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": process_start(os.getpid()),
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300],
    }
    for _ in range(100):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            _refuse(path, me)
        except OSError as err:
            os.close(fd)
            raise StoreError(
                f"store {path}: its file system cannot lock {lock} ({err.strerror or err}); "
                "choose an out on another disk"
            ) from None
        # The holder before may have released (removed the file) between our open and flock:
        # a lock on a file no longer at `lock` guards nothing, so open it afresh.
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
            os.close(fd)
            continue
        try:
            _check_legacy(path, _holder(fd), me)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except BaseException:
            os.close(fd)  # the file stays: it still names the run that held it
            raise
        return fd
    raise StoreError(f"store {path}: could not take its lock {lock}; try again")


def _holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 65536, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _check_legacy(path: Path, holder: dict, me: dict) -> None:
    """A free lock whose file names a live run: a writer of a flowtrace from before locks were
    held open (same host), or a run on another host whose lock this file system may not share."""
    pid, host = _pid(holder), holder.get("host")
    if not pid or not host:
        return  # empty or unreadable: nobody to ask, and nobody holds it
    if host == me["host"] and (pid == me["pid"] or not alive(pid, str(holder.get("start", "")))):
        return  # a killed run's lock (or this process's own, left open): taken over
    _refuse_holder(path, holder, me)


def _refuse(path: Path, me: dict) -> None:
    lock = path / LOCK
    deadline = time.monotonic() + HOLDER_WAIT
    while True:  # a new holder writes its name just after taking the lock
        holder = {}
        with contextlib.suppress(OSError), open(lock, "rb") as f:
            holder = _holder(f.fileno())
        pid = _pid(holder)
        same_host = holder.get("host") == me["host"]
        named = pid and (not same_host or alive(pid, str(holder.get("start", ""))))
        if named or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not named:
        raise StoreError(
            f"store {path} is being written by another run (it holds {lock} but has not "
            "written its name there yet); wait for it or choose another out"
        ) from None
    _refuse_holder(path, holder, me)


def _refuse_holder(path: Path, holder: dict, me: dict) -> None:
    pid = _pid(holder)
    same_host = holder.get("host") == me["host"]
    if same_host and pid == me["pid"]:
        raise StoreError(
            f"store {path} is already open for writing in this process; close it first"
        ) from None
    where = f"pid {pid} on {holder.get('host', '?')}"
    hint = "" if same_host else f"; if that run is gone, delete {path / LOCK}"
    raise StoreError(
        f"store {path} is being written by another run ({where}, since "
        f"{holder.get('since', '?')}: {holder.get('command', '?')}); wait for it or "
        f"choose another out{hint}"
    ) from None


def _pid(holder: dict) -> int:
    try:
        return int(holder.get("pid", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a lock was made in, innermost first, where nothing else landed."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            return


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_marker(path: Path) -> None:
    marker = {"format": STORE_FORMAT, "created": dt.datetime.now(dt.UTC).isoformat()}
    tmp = path / f"{MARKER}.{os.getpid()}"
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, path / MARKER)


def marker_format(path: Path) -> int:
    """The store format its marker was written with (0: no marker)."""
    if not (Path(path) / MARKER).is_file():
        return 0
    try:
        return int(read_json(Path(path) / MARKER).get("format", 1))
    except (TypeError, ValueError):
        return 1


def is_flowtrace_store(path: Path) -> bool:
    """Whether flowtrace made this folder: its marker, and nothing else. A zarr saved with
    xarray from a store keeps the store's attributes, so attributes prove nothing."""
    return (Path(path) / MARKER).is_file()


def clear_store(path: Path) -> None:
    """Delete a flowtrace store's contents, keeping its lock and marker; its root metadata goes
    first, so a reader meanwhile finds no store rather than part of one."""
    (path / "zarr.json").unlink(missing_ok=True)
    for child in path.iterdir():
        if child.name in (LOCK, MARKER):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
