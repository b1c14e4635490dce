"""Cubes on disk: one xarray Dataset per run as a zarr v3 store, written in batches of samples.

What a reader can rely on:
- Whole samples only. Data is written first (each chunk file is replaced atomically), then the
  root `zarr.json` with the consolidated metadata, whose array shapes say how many samples are
  whole, is replaced atomically. `xarray.open_zarr(path)` reads that metadata, so it never sees a
  sample that is half written, during a run or after one was killed.
- One writer. A run holds a lock file in the store; a second run on the same store is refused,
  naming the holder; a lock whose process is gone is taken over.
- Only flowtrace's stores are resumed, recreated or deleted: a store carries a marker from its
  creation on, and anything else at `--out` is refused.
- Damage is found, not read as data: every chunk carries a CRC32C checksum, and `open_cube`
  names the damaged or missing array and samples.

Writes are batched: samples are buffered and flushed by a writer thread every `flush_samples`
samples or `flush_seconds` seconds, whichever comes first, so the model never waits on zarr and a
SIGKILL loses at most those seconds of work (recomputed on resume). Where writes are slow, flushes
are spaced to `WRITE_PACE` times the last write's duration, so the writer, which holds Python's
lock while it encodes metadata, takes a small share of the run from the thread driving the GPU.
Arrays are chunked along `sample` in blocks of `CHUNK_SAMPLES`, so a flush rewrites only the last
block of each array and its cost does not grow with the store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from flowtrace.cube import SAMPLE, SampleRecord, Schema, stack
from flowtrace.errors import StoreError

# The lock and marker files beside the arrays are ours; zarr lists them when it walks the group.
warnings.filterwarnings("ignore", message="Object at .flowtrace", category=UserWarning)

__all__ = ["SAMPLE", "CubeStore", "check_store", "compact", "is_flowtrace_store", "open_cube"]

MARKER = ".flowtrace-store"  # written at creation: this folder is a store flowtrace started
LOCK = ".flowtrace-lock"  # held by the run writing the store
STORE_FORMAT = 2  # 2: chunks of CHUNK_SAMPLES samples with checksums, NaN blocked_edges if skipped
CHUNK_SAMPLES = 64
CHUNK_ELEMENTS = 4_000_000  # a chunk of a large per-sample array holds fewer samples
FLUSH_SAMPLES = 16
FLUSH_SECONDS = 2.0
# A flush waits at least this many times the last write's duration after it: the writer then
# takes at most 1/(1 + WRITE_PACE) of the wall time (5%), and a kill loses at most that much more.
WRITE_PACE = 19.0
EAGER_ELEMENTS = 50_000_000  # open_cube loads (and so verifies) stores up to this size

# Attributes that must match for a run to continue an existing store.
RESUME_KEYS = (
    "recipe", "recipe_kind", "recipe_source", "edges", "model", "model_revision", "adapter",
    "dtype", "attn", "data", "data_root", "tasks", "limit", "frames", "pooling", "window",
    "window_style", "sweep", "sample_mode", "eval_only", "engine", "seed", "overlay_layers",
    "data_kind", "ratio", "heads", "generate", "store_format",
)  # fmt: skip


class CubeStore:
    """The store of one run: created, or resumed if it holds the same run; written in batches.

    Use as a context manager (or call `close()`): closing flushes what is buffered, stops the
    writer thread and releases the lock.
    """

    def __init__(
        self,
        path: Path,
        attrs: dict[str, str | int | float],
        overwrite: bool = False,
        schema: Schema | None = None,
        flush_samples: int = FLUSH_SAMPLES,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.attrs = {**attrs, "store_format": STORE_FORMAT}
        self.schema = schema
        self.flush_samples, self.flush_seconds = max(1, flush_samples), flush_seconds
        self.done: set[str] = set()  # sample ids already in the store
        self.written = 0  # samples on disk (whole)
        self._lock_held = False
        self._overwrite = overwrite
        self._buffer: list[SampleRecord] = []
        self._first_buffered: float | None = None
        self._next_write = 0.0  # monotonic time before which no flush is due (pacing)
        self._error: BaseException | None = None
        self._closing = False
        self._cond = threading.Condition()
        # One write at a time, in the order batches were taken: `flush()` may run beside the
        # writer thread.
        self._writing = threading.Lock()
        self._open()
        self._thread = threading.Thread(target=self._writer, name="flowtrace-writer", daemon=True)
        self._thread.start()

    # -- opening -----------------------------------------------------------------------------

    def _open(self) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise StoreError(f"store {path} is a file, not a store folder; choose another out")
        if path.exists() and any(path.iterdir()) and not is_flowtrace_store(path):
            raise StoreError(
                f"store {path} exists and is not a flowtrace store (nothing of it was written by "
                "flowtrace); it is left untouched: choose another out"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._lock_held = _acquire_lock(path)
            if not (path / MARKER).exists():
                _write_marker(path)
        except OSError as err:  # no permission, a file where a folder should be, a full disk
            self._release()
            raise StoreError(
                f"store {path} cannot be written ({err.strerror or err}); choose another out"
            ) from None
        if not (path / "zarr.json").is_file():
            return
        try:
            ds = _open_consolidated(path)
        except ValueError:
            # No consolidated metadata: killed before its first flush was whole.
            ds = None
        if self._overwrite or ds is None:
            _clear(path)
            return
        differ = [
            f"{key}: {ds.attrs.get(key)!r} there, {self.attrs.get(key)!r} now"
            for key in RESUME_KEYS
            if str(ds.attrs.get(key)) != str(self.attrs.get(key))
        ]
        if differ:
            self._release()
            raise StoreError(
                f"store {path} holds another run ({'; '.join(differ)}); pass overwrite to "
                "replace it or choose another out"
            )
        self.written = ds.sizes[SAMPLE]
        self.done = {str(s) for s in ds[SAMPLE].values}
        _truncate(path, self.written)

    # -- writing -----------------------------------------------------------------------------

    def append(self, items: SampleRecord | Sequence[SampleRecord]) -> None:
        """Queue samples (a record or records) for the writer thread."""
        batch = list(items) if isinstance(items, list | tuple) else [items]
        with self._cond:
            self._raise_writer_error()
            if self._first_buffered is None:
                self._first_buffered = time.monotonic()
            self._buffer.extend(batch)
            self._cond.notify()

    def flush(self) -> None:
        """Write everything buffered now, in this thread."""
        with self._writing:
            with self._cond:
                batch, self._buffer, self._first_buffered = self._buffer, [], None
            if batch:
                started = time.monotonic()
                self._write(batch)
                ended = time.monotonic()
                self._next_write = ended + WRITE_PACE * (ended - started)

    def close(self) -> None:
        """Flush, stop the writer, release the lock. Raises the writer's error, if any."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        try:
            if self._error is None:
                self.flush()
        finally:
            self._release()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> CubeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # keep what was analysed, but let the original error through
            with contextlib.suppress(Exception):
                self.close()

    def _writer(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._due():
                    wait = None
                    if self._first_buffered is not None:
                        due = self._first_buffered + self.flush_seconds
                        wait = max(due, self._next_write) - time.monotonic()
                    self._cond.wait(timeout=None if wait is None else max(wait, 0.001))
                if self._closing:
                    return
            try:
                self.flush()
            except BaseException as err:  # noqa: BLE001 - raised in the run's thread
                with self._cond:
                    self._error = err
                return

    def _due(self) -> bool:
        if not self._buffer or not self._schema_ready():
            return False
        now = time.monotonic()
        if now < self._next_write:
            return False
        waited = now - (self._first_buffered or now)
        return len(self._buffer) >= self.flush_samples or waited >= self.flush_seconds

    def _schema_ready(self) -> bool:
        """Whether the records' variables are known (a trace program's after its first result):
        the first flush fixes the arrays."""
        schemas = [r.schema for r in self._buffer if r.schema]
        schema = schemas[-1] if schemas else self.schema
        return schema is None or schema.complete

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write(self, batch: list[SampleRecord]) -> None:
        if self.schema is None and not any(r.schema for r in batch):
            raise ValueError("CubeStore: records need the measure's schema")
        ds = stack(batch, self.schema)
        ds = _vlen_strings(ds)
        with warnings.catch_warnings():
            # Consolidated metadata is a zarr-python extension of v3; xarray reads it fine.
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            if self.written == 0:
                ds.attrs.update(self.attrs)
                ds.to_zarr(
                    self.path,
                    mode="a",  # "w" would delete the lock and marker beside the arrays
                    zarr_format=3,
                    consolidated=False,
                    encoding=_encoding(ds),
                    write_empty_chunks=True,  # every chunk on disk: a missing one is damage
                )
            else:
                with zarr.config.set({"array.write_empty_chunks": True}):
                    _append_arrays(self.path, ds, self.written)
            _consolidate(self.path)  # one atomic write: the samples are now whole
        self.written += ds.sizes[SAMPLE]
        self.done.update(str(s) for s in ds[SAMPLE].values)

    def _release(self) -> None:
        if self._lock_held:
            _release_lock(self.path)
            self._lock_held = False


# -- the lock --------------------------------------------------------------------------------


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not
    taken for the holder; "" where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _process_start(pid) in ("", start)


def _acquire_lock(path: Path) -> bool:
    lock = path / LOCK
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _process_start(os.getpid()),
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
                holder = _read_json(lock)
            same_host = holder.get("host") == me["host"]
            pid = int(holder.get("pid", 0) or 0)
            if same_host and pid == me["pid"]:
                raise StoreError(
                    f"store {path} is already open for writing in this process; close it first"
                ) from None
            if same_host and pid and not _alive(pid, str(holder.get("start", ""))):
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


def _release_lock(path: Path) -> None:
    lock = path / LOCK
    holder = _read_json(lock)
    if holder.get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# -- the marker ------------------------------------------------------------------------------


def _write_marker(path: Path) -> None:
    marker = {"format": STORE_FORMAT, "created": dt.datetime.now(dt.UTC).isoformat()}
    tmp = path / f"{MARKER}.{os.getpid()}"
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, path / MARKER)


def is_flowtrace_store(path: Path) -> bool:
    """Whether flowtrace started this folder (its marker), or wrote it before markers existed."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    attrs = _read_json(path / "zarr.json").get("attributes", {})
    return "flowtrace_version" in attrs and "recipe" in attrs


def _clear(path: Path) -> None:
    """Delete a flowtrace store's contents, keeping its lock and marker."""
    for child in path.iterdir():
        if child.name in (LOCK, MARKER):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


# -- arrays ----------------------------------------------------------------------------------


def _encoding(ds: xr.Dataset) -> dict[str, dict]:
    """Chunks along `sample` in blocks, every array with a checksum."""
    encoding = {}
    for name, var in ds.variables.items():
        codecs = {"compressors": (ZstdCodec(), Crc32cCodec())}
        if var.dims and var.dims[0] == SAMPLE:
            per_sample = int(np.prod(var.shape[1:], dtype=np.int64)) or 1
            rows = max(1, min(CHUNK_SAMPLES, CHUNK_ELEMENTS // per_sample))
            codecs["chunks"] = (rows, *var.shape[1:])
        elif var.dims:
            codecs["chunks"] = var.shape
        encoding[str(name)] = codecs
    return encoding


def _arrays(path: Path, mode: str, consolidated: bool) -> list[tuple[str, zarr.Array]]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Object at .flowtrace")
        group = zarr.open_group(path, mode=mode, use_consolidated=consolidated)
        return list(group.arrays())


def _append_arrays(path: Path, ds: xr.Dataset, start: int) -> None:
    """Grow every sample-indexed array and write the new rows; only the arrays' own metadata and
    chunks change, not the root's, so readers keep the last whole state until consolidation."""
    arrays = dict(_arrays(path, "r+", consolidated=False))
    rows = ds.sizes[SAMPLE]
    for name, array in arrays.items():
        names = tuple(array.metadata.dimension_names or ())
        if names[:1] == (SAMPLE,) and name not in ds.variables:
            # A variable these samples lack (they failed before a trace program's first
            # result): its fill value, written out, so no stale row of a killed flush shows.
            array.resize((start + rows, *array.shape[1:]))
            array[start : start + rows] = array.metadata.fill_value
    for name, var in ds.variables.items():
        if not var.dims or var.dims[0] != SAMPLE:
            continue
        array = arrays[str(name)]
        names = tuple(array.metadata.dimension_names or ())
        values = var.transpose(*names).values if names else var.values
        if values.dtype.kind == "U":
            values = values.astype(object)
        array.resize((start + rows, *array.shape[1:]))
        array[start : start + rows] = values


def _truncate(path: Path, length: int) -> None:
    """Cut every sample-indexed array back to `length` (a killed flush may have grown some)."""
    arrays = _arrays(path, "r+", consolidated=False)
    changed = False
    for _, array in arrays:
        names = array.metadata.dimension_names or ()
        if names and names[0] == SAMPLE and array.shape[0] != length:
            array.resize((length, *array.shape[1:]))
            changed = True
    if changed:
        _consolidate(path)


def _consolidate(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        # The lock and marker files beside the arrays are ours, not zarr's.
        warnings.filterwarnings("ignore", message="Object at .flowtrace")
        zarr.consolidate_metadata(path)


def compact(path: Path | str) -> None:
    """Rewrite a finished store with one chunk per array instead of blocks of samples: the same
    Dataset in a few dozen files (for stores kept in git). It is not resumed after."""
    path = Path(path)
    ds = _vlen_strings(open_cube(path).load())
    for name in ds.variables:
        ds[name].encoding = {}
    encoding = {
        str(name): {"compressors": (ZstdCodec(), Crc32cCodec())}
        | ({"chunks": var.shape} if var.dims else {})
        for name, var in ds.variables.items()
    }
    staging = path.with_name(path.name + ".compact")
    shutil.rmtree(staging, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds.to_zarr(
            staging,
            mode="w-",
            zarr_format=3,
            consolidated=True,
            encoding=encoding,
            write_empty_chunks=True,
        )
    _write_marker(staging)
    shutil.rmtree(path)
    staging.rename(path)


# -- reading ---------------------------------------------------------------------------------


def _open_consolidated(path: Path) -> xr.Dataset:
    # The consolidated metadata is replaced last by every flush: it describes whole samples only.
    return xr.open_zarr(path, consolidated=True)


def open_cube(path: Path | str, load: bool | None = None) -> xr.Dataset:
    """Open a store's whole samples; a missing or damaged chunk is an error naming the array and
    the samples it holds. `load` (default: stores up to EAGER_ELEMENTS values) reads every array
    now, so damage shows here instead of in a later computation."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"store {path} does not exist (or is not a zarr store)")
    try:
        ds = _open_consolidated(path)
    except ValueError:
        raise StoreError(
            f"store {path} holds no complete sample yet (its run is starting or was killed "
            "before the first samples were saved)"
        ) from None
    except Exception as err:  # noqa: BLE001 - a damaged metadata file
        raise StoreError(f"store {path}: its metadata cannot be read ({err})") from None
    missing = _chunk_problems(path, decode=False)
    if missing:
        raise StoreError(f"{missing[0]}; run `flowtrace check {path}` for every damaged chunk")
    if load is None:
        load = sum(v.size for v in ds.variables.values()) <= EAGER_ELEMENTS
    if load:
        for name in list(ds.variables):
            try:
                ds[name].load()
            except Exception:  # noqa: BLE001 - checksum or codec errors, named below
                # A variable loads its coordinates too: the damage may lie in any of them.
                found = _chunk_problems(path, names=[str(name)]) or _chunk_problems(path)
                what = found[0] if found else f"store {path}: array {name} cannot be read"
                raise StoreError(
                    f"{what}; run `flowtrace check {path}` for every damaged chunk"
                ) from None
    return ds


def check_store(path: Path | str) -> list[str]:
    """Every chunk of every array read and verified against its checksum: the problems found
    (empty when the store is whole)."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"store {path} does not exist (or is not a zarr store)")
    return _chunk_problems(path)


def chunk_count(path: Path | str) -> int:
    """Chunks on disk over every array (what `check_store` reads)."""
    arrays = _arrays(Path(path), "r", consolidated=True)
    return sum(int(a.nchunks_initialized) for _, a in arrays)


def _chunk_problems(
    path: Path, decode: bool = True, names: Sequence[str] | None = None
) -> list[str]:
    try:
        group = zarr.open_group(path, mode="r", use_consolidated=True)
        arrays = _arrays(path, "r", consolidated=True)
    except Exception as err:  # noqa: BLE001
        return [f"store {path}: its metadata cannot be read ({err})"]
    # Before format 2, chunks holding only fill values were not written: absence is no damage.
    complete = int(group.attrs.get("store_format", 1)) >= 2
    problems = []
    for name, array in arrays:
        if names is not None and name not in names:
            continue
        dims = tuple(array.metadata.dimension_names or ())
        rows = array.chunks[0] if array.chunks else 1
        for index in np.ndindex(*array.cdata_shape):
            where = f"store {path}: array {name}"
            if dims and dims[0] == SAMPLE:
                first = index[0] * rows
                last = min(first + rows, array.shape[0]) - 1
                where += f", samples {first}-{last}"
            key = "/".join(["c", *map(str, index)])
            if not (path / name / key).is_file():
                if complete:
                    problems.append(f"{where}: chunk {key} is missing")
                continue
            if decode:
                try:
                    array.blocks[index]
                except Exception as err:  # noqa: BLE001 - checksum, codec or short file
                    problems.append(f"{where}: chunk {key} is damaged ({type(err).__name__})")
    return problems


def _vlen_strings(ds: xr.Dataset) -> xr.Dataset:
    def fix(array: xr.DataArray) -> xr.DataArray:
        if array.dtype.kind in "UO" or str(array.dtype).startswith("StringDType"):
            return array.astype(object)
        return array

    ds = ds.copy()
    for name in list(ds.variables):
        fixed = fix(ds[name])
        if fixed.dtype != ds[name].dtype:
            if name in ds.dims:
                ds = ds.assign_coords({name: np.asarray(fixed.values, dtype=object)})
            else:
                ds[name] = fixed
    return ds
