"""Cubes on disk: one xarray Dataset per run as a zarr v3 store, written in batches of samples.

What a reader can rely on (docs/design.md, "What the store promises"):
- Whole samples only. Data is written first (each chunk file is replaced atomically), then the
  root `zarr.json`, with the consolidated metadata whose array shapes say how many samples are
  whole, is replaced atomically. The first flush's arrays are renamed in before any root exists,
  so `xarray.open_zarr(path)` finds no store or whole samples, during a run or after a kill.
- One writer. A run holds an flock on the store's lock file, from before its model loads; a
  second run is refused, naming the holder; a killed run's lock is free when it dies.
- Only flowtrace's stores are resumed, recreated or deleted: a store carries a marker from its
  creation on, and anything else at `--out` (or inside another store) is refused.
- Damage is found, not read as data: every chunk carries a CRC32C, and the root carries
  checksums of the attributes, of each array's metadata and of each chunk's values at its array
  and position; `open_cube` and `check_store` name what does not match.

Writes are batched: samples are buffered and flushed by a writer thread every `flush_samples`
samples or `flush_seconds` seconds, whichever comes first, so the model never waits on zarr and a
SIGKILL loses at most those seconds of work (recomputed on resume). Where writes are slow, flushes
are spaced to `WRITE_PACE` times the last write's duration, so the writer, which holds Python's
lock while it encodes metadata, takes a small share of the run from the thread driving the GPU.
Arrays are chunked along `sample` in blocks of `CHUNK_SAMPLES`, so a flush rewrites only the last
block of each array and its cost does not grow with the store.
"""

from flowtrace.store.arrays import CHECKSUMS, CHUNK_SAMPLES, STORE_FORMAT
from flowtrace.store.cube import SAMPLE
from flowtrace.store.keys import RESUME_KEYS
from flowtrace.store.lock import LOCK, MARKER, is_flowtrace_store, reserved
from flowtrace.store.reader import (
    analysed,
    analysed_mask,
    check_store,
    chunk_count,
    compact,
    open_cube,
    unverified,
)
from flowtrace.store.writer import FLUSH_SAMPLES, FLUSH_SECONDS, WRITE_PACE, CubeStore

__all__ = [
    "CHECKSUMS",
    "CHUNK_SAMPLES",
    "FLUSH_SAMPLES",
    "FLUSH_SECONDS",
    "LOCK",
    "MARKER",
    "RESUME_KEYS",
    "SAMPLE",
    "STORE_FORMAT",
    "WRITE_PACE",
    "CubeStore",
    "analysed",
    "analysed_mask",
    "check_store",
    "chunk_count",
    "compact",
    "is_flowtrace_store",
    "open_cube",
    "reserved",
    "unverified",
]
