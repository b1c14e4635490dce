"""Stores made wrong on purpose (issue 33), from the finished store of tests/test_errors.py: a
subset saved with xarray, an edited sample count, chunks swapped between two variables, a store
from before checksums, damaged root metadata, a store another process holds, and a disk that
fills during a run. tests/test_errors.py runs the CLI on them."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from flowtrace.store.lock import acquire_lock
    acquire_lock(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(600)
    """
)


def _edit_root(path: Path, change) -> None:  # noqa: ANN001
    root = json.loads((path / "zarr.json").read_text())
    change(root)
    (path / "zarr.json").write_text(json.dumps(root))


def altered_stores(store: Path, base: Path) -> dict[str, Path]:
    """Fixture paths by name, each a copy of `store` (or made from it) changed one way."""
    import xarray as xr

    def copy(name: str) -> Path:
        return Path(shutil.copytree(store, base / name / "store.zarr"))

    found = {"subset": base / "subset.zarr"}
    xr.open_zarr(store).isel(sample=[0]).to_zarr(found["subset"], zarr_format=3)

    def phantom(root: dict) -> None:  # two more samples than were analysed
        for meta in root["consolidated_metadata"]["metadata"].values():
            if meta["dimension_names"][:1] == ["sample"]:
                meta["shape"][0] += 2

    found["phantom"] = copy("phantom")
    _edit_root(found["phantom"], phantom)
    found["swapped"] = swapped = copy("swapped")
    a, b = (
        next(p for p in (swapped / name / "c").rglob("*") if p.is_file())
        for name in ("clean_prob_pred", "clean_prob_true")  # measured on skipped samples too
    )
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)

    def older(root: dict) -> None:  # as flowtrace wrote stores before checksums (format 1)
        root["attributes"].pop("flowtrace_checksums")
        root["attributes"].pop("store_format")

    found["older"] = copy("older")
    _edit_root(found["older"], older)
    (found["older"] / ".flowtrace-store").unlink()
    found["broken_meta"] = copy("broken_meta")
    text = (found["broken_meta"] / "zarr.json").read_text()
    (found["broken_meta"] / "zarr.json").write_text(text[: len(text) // 2])
    found["held"] = copy("held")
    return found


@contextlib.contextmanager
def held(store: Path) -> Iterator[subprocess.Popen]:
    """Another process holding `store`'s lock, as a run writing it does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def full_disk(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """zarr's writes fail with ENOSPC once `after` of them have succeeded."""
    import zarr

    real = zarr.storage.LocalStore.set
    calls = [0]

    async def set_(self, key, value):  # noqa: ANN001
        calls[0] += 1
        if calls[0] > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", set_)
