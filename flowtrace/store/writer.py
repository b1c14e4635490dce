"""Writing a run's store: create or resume it, buffer samples, flush them from a writer thread."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import zarr

from flowtrace.errors import StoreError
from flowtrace.store.arrays import (
    CHECKSUMS,
    STORE_FORMAT,
    append_arrays,
    chunk_digests,
    commit,
    truncate,
    vlen_strings,
    write_first,
)
from flowtrace.store.cube import SAMPLE, SampleRecord, Schema, stack
from flowtrace.store.keys import FORMAT, RESUME_KEYS
from flowtrace.store.lock import MARKER, acquire_lock, clear_store, release_lock, write_marker
from flowtrace.store.reader import is_started, metadata_problems, open_consolidated, read_root

FLUSH_SAMPLES = 16


FLUSH_SECONDS = 2.0


# A flush waits at least this many times the last write's duration after it: the writer then
# takes at most 1/(1 + WRITE_PACE) of the wall time (5%), and a kill loses at most that much more.
WRITE_PACE = 19.0


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
        self.attrs = {**attrs, FORMAT: STORE_FORMAT}
        self.schema = schema
        self.flush_samples, self.flush_seconds = max(1, flush_samples), flush_seconds
        self.done: set[str] = set()  # sample ids already in the store
        self.written = 0  # samples on disk (whole)
        self._lock_held = False
        self._overwrite = overwrite
        self._root_attrs: dict = {}  # the root attributes as written (JSON)
        self._chunks: dict[str, str] = {}  # every chunk's checksum, as the root will carry
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
        try:
            # Refuses a file, a folder inside another store, a folder flowtrace did not make,
            # and a store another run writes; adopts the lock this run took before its model.
            self._lock_held = acquire_lock(path)
            if not (path / MARKER).exists():
                write_marker(path)
        except OSError as err:  # no permission, a file where a folder should be, a full disk
            self._release()
            raise StoreError(
                f"store {path} cannot be written ({err.strerror or err}); choose another out"
            ) from None
        try:
            self._resume()
        except BaseException:
            self._release()
            raise

    def _resume(self) -> None:
        path = self.path
        try:
            root = read_root(path)
        except StoreError as err:
            if not self._overwrite:
                raise StoreError(
                    f"{err}; pass overwrite=True to replace it, or out=PATH elsewhere"
                ) from None
            root = None
        if root is None or is_started(path, root) or self._overwrite:
            # No root metadata: killed before its first flush was whole (what is there, its
            # first flush's arrays, is deleted); or replaced on request.
            clear_store(path)
            return
        damage = metadata_problems(path, root)
        if damage:
            raise StoreError(
                f"{damage[0]}; run `flowtrace check {path}`, and pass overwrite=True to replace "
                "it, or out=PATH elsewhere"
            )
        ds = open_consolidated(path)
        differ = [
            f"{key}: {ds.attrs.get(key)!r} there, {self.attrs.get(key)!r} now"
            for key in RESUME_KEYS
            if str(ds.attrs.get(key)) != str(self.attrs.get(key))
        ]
        if differ:
            raise StoreError(
                f"store {path} holds another run ({'; '.join(differ)}); pass overwrite=True to "
                "replace it, or out=PATH elsewhere"
            )
        self.written = ds.sizes[SAMPLE]
        self.done = {str(s) for s in ds[SAMPLE].values}
        self._root_attrs = {k: v for k, v in root["attributes"].items() if k != CHECKSUMS}
        self._chunks = dict(json.loads(root["attributes"][CHECKSUMS])["chunks"])
        truncate(path, self.written)

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
        ds = vlen_strings(ds)
        try:
            if self.written == 0:
                ds.attrs.update(self.attrs)
                self._root_attrs, chunks = write_first(self.path, ds)
            else:
                with zarr.config.set({"array.write_empty_chunks": True}):
                    arrays = append_arrays(self.path, ds, self.written)
                chunks = {**self._chunks, **chunk_digests(arrays, self.written)}
            commit(self.path, self._root_attrs, chunks)  # one atomic write: samples now whole
        except OSError as err:  # a full disk, a folder gone read-only, a lost mount
            raise StoreError(
                f"store {self.path}: saving samples failed ({err.strerror or err}); the "
                f"{self.written} samples saved before are whole and kept: free space on its "
                "disk (or make it writable), then run the same command again to resume"
            ) from None
        self._chunks = chunks
        self.written += ds.sizes[SAMPLE]
        self.done.update(str(s) for s in ds[SAMPLE].values)

    def _release(self) -> None:
        if self._lock_held:
            release_lock(self.path)
            self._lock_held = False
