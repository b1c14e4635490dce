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

from flowtrace.cube import SAMPLE
from flowtrace.store.arrays import CHUNK_SAMPLES, STORE_FORMAT
from flowtrace.store.lock import LOCK, MARKER, is_flowtrace_store
from flowtrace.store.reader import check_store, chunk_count, compact, open_cube
from flowtrace.store.writer import FLUSH_SAMPLES, FLUSH_SECONDS, RESUME_KEYS, WRITE_PACE, CubeStore

__all__ = [
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
    "check_store",
    "chunk_count",
    "compact",
    "is_flowtrace_store",
    "open_cube",
]
