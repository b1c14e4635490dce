"""A folder nothing may be written in, for tests of read-only outputs.

By its mode where that stops the test's user; root ignores modes, so for root Python's calls
that create, replace or remove files under the folder fail with EACCES instead, as they would
on a read-only mount (what flowtrace and its libraries write goes through these calls).
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

import pytest

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def seal(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `folder` read-only until the test ends."""
    if os.geteuid() != 0:
        folder.chmod(0o555)  # pytest's clean-up of its temporary folders restores the mode
        return
    root = os.path.realpath(folder)

    def inside(path) -> bool:
        if isinstance(path, int):
            return False
        real = os.path.realpath(os.fspath(path))
        return real == root or real.startswith(root + os.sep)

    def denied(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    real_open, real_os_open, real_mkdir = io.open, os.open, os.mkdir

    def guarded_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(m in mode for m in "wax+"):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & WRITE_FLAGS:
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    def guard(real, paths: int):
        def call(*args, **kwargs):
            # mkdir of an existing folder says so first, as the kernel does
            exists = real is real_mkdir and os.path.lexists(args[0])
            if not exists and any(inside(path) for path in args[:paths]):
                raise denied(args[0])
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    for name, args in (("mkdir", 1), ("replace", 2), ("rename", 2), ("unlink", 1), ("rmdir", 1)):
        monkeypatch.setattr(os, name, guard(getattr(os, name), args))


def sealed_copy(store: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`folder` holding a copy of `store` (as store.zarr), made read-only."""
    import shutil

    shutil.copytree(store, folder / "store.zarr")
    seal(folder, monkeypatch)
    return folder
