"""The arrays on disk: their chunking and codecs, the first flush made whole in one rename,
appends that grow them in place, truncation to the whole samples, and the root metadata written
last: the consolidated metadata with the checksums that bind it and every chunk."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from flowtrace.store.cube import SAMPLE

# Two zarr warnings that are not the user's concern, off once here rather than around each call
# (`catch_warnings` is not thread-safe, and the writer thread lists and consolidates stores): the
# lock and marker files beside the arrays are ours, not zarr's; consolidated metadata is a
# zarr-python extension of v3 that xarray reads fine.
warnings.filterwarnings("ignore", message=r"Object at \.flowtrace")
warnings.filterwarnings("ignore", message="Consolidated metadata")

# 2: chunks of CHUNK_SAMPLES samples with CRC32C, NaN blocked_edges if skipped; 3: CHECKSUMS
STORE_FORMAT = 3


# The root attribute holding the checksums of the attributes, of each array's metadata and of
# each chunk's values (a JSON string, so a Dataset opened from a store still saves to netCDF).
CHECKSUMS = "flowtrace_checksums"


STAGING = ".flowtrace-staging"  # the first flush is written here, then renamed into the store


CHUNK_SAMPLES = 64


CHUNK_ELEMENTS = 4_000_000  # a chunk of a large per-sample array holds fewer samples


def array_encoding(ds: xr.Dataset) -> dict[str, dict]:
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


def zarr_arrays(path: Path, mode: str, consolidated: bool) -> list[tuple[str, zarr.Array]]:
    group = zarr.open_group(path, mode=mode, use_consolidated=consolidated)
    return list(group.arrays())


def write_first(path: Path, ds: xr.Dataset) -> tuple[dict, dict[str, str]]:
    """Write the first flush's arrays beside the store and rename them in. The store has no root
    metadata until `commit`, so a reader finds no store at all before its first whole samples.
    Returns the root attributes as written and every chunk's checksum."""
    staging = path / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    try:
        ds.to_zarr(
            staging,
            mode="w-",
            zarr_format=3,
            consolidated=False,
            encoding=array_encoding(ds),
            write_empty_chunks=True,  # every chunk on disk: a missing one is damage
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a full disk: give back what it took
        raise
    chunks = chunk_digests(zarr_arrays(staging, "r", consolidated=False))
    for child in sorted(staging.iterdir()):
        if child.is_dir():
            shutil.rmtree(path / child.name, ignore_errors=True)  # a failed first flush's
            os.rename(child, path / child.name)
    attrs = json.loads((staging / "zarr.json").read_bytes()).get("attributes", {})
    shutil.rmtree(staging)
    return attrs, chunks


def append_arrays(path: Path, ds: xr.Dataset, start: int) -> list[tuple[str, zarr.Array]]:
    """Grow every sample-indexed array and write the new rows; only the arrays' own metadata and
    chunks change, not the root's, so readers keep the last whole state until `commit`.
    Returns the arrays."""
    arrays = dict(zarr_arrays(path, "r+", consolidated=False))
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
    return list(arrays.items())


def truncate(path: Path, length: int) -> None:
    """Cut every sample-indexed array's own metadata back to `length` (a killed flush may have
    grown some); the root metadata says `length` already."""
    for _, array in zarr_arrays(path, "r+", consolidated=False):
        names = array.metadata.dimension_names or ()
        if names and names[0] == SAMPLE and array.shape[0] != length:
            array.resize((length, *array.shape[1:]))


def chunk_key(index: tuple[int, ...]) -> str:
    return "/".join(["c", *map(str, index)])


def chunks_from(array: zarr.Array, row: int = 0) -> list[tuple[int, ...]]:
    """The chunk indices of `array` holding rows from `row` on (an array not indexed by sample:
    every chunk from row 0, none after)."""
    names = tuple(array.metadata.dimension_names or ())
    if names[:1] != (SAMPLE,):
        return list(np.ndindex(*array.cdata_shape)) if row == 0 else []
    first = row // array.chunks[0]
    return [i for i in np.ndindex(*array.cdata_shape) if i[0] >= first]


def values_digest(values: np.ndarray) -> str:
    """A digest of a chunk's values as read (the rows inside the array's shape), so it holds
    while a flush rewrites the chunk's file with more rows after them."""
    values = np.asarray(values)
    h = hashlib.blake2b(digest_size=16)
    if values.dtype.kind in "OUT" or str(values.dtype).startswith("StringDType"):
        h.update(f"str{values.shape}".encode())
        h.update(json.dumps([str(v) for v in values.ravel()]).encode())
    else:
        h.update(f"{values.dtype.str}{values.shape}".encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def chunk_digests(arrays: list[tuple[str, zarr.Array]], row: int = 0) -> dict[str, str]:
    """`NAME/c/…` -> the digest of that chunk's values, over the chunks holding rows from `row`
    on (read back from disk: what a reader will get)."""
    return {
        f"{name}/{chunk_key(index)}": values_digest(array.blocks[index])
        for name, array in arrays
        for index in chunks_from(array, row)
    }


def digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def checksums(attrs: dict, metadata: dict[str, dict], chunks: dict[str, str]) -> dict:
    """What a store's root carries to bind its attributes, each array's metadata (its shape:
    how many samples) and each chunk's values to their array and position."""
    return {
        "attributes": digest({k: v for k, v in attrs.items() if k != CHECKSUMS}),
        "arrays": {name: digest(meta) for name, meta in metadata.items()},
        "chunks": dict(sorted(chunks.items())),
    }


def array_metadata(path: Path) -> dict[str, dict]:
    """Each array's own metadata document, as zarr wrote it."""
    found = {}
    for child in sorted(path.iterdir()):
        meta = child / "zarr.json"
        if child.is_dir() and not child.name.startswith(".flowtrace") and meta.is_file():
            found[child.name] = json.loads(meta.read_bytes())
    return found


def commit(path: Path, attrs: dict, chunks: dict[str, str]) -> None:
    """Write the root metadata in one atomic replace: the attributes, every array's metadata
    consolidated (what `xr.open_zarr` reads, so readers see these samples and no others) and the
    checksums. `chunks` must cover every chunk of every array."""
    attrs = {k: v for k, v in attrs.items() if k != CHECKSUMS}
    metadata = array_metadata(path)
    wanted = {
        f"{name}/{chunk_key(i)}" for name, meta in metadata.items() for i in np.ndindex(*grid(meta))
    }
    if wanted - chunks.keys():
        raise AssertionError(f"chunks without a checksum: {sorted(wanted - chunks.keys())[:3]}")
    sums = checksums(attrs, metadata, {k: chunks[k] for k in wanted})
    root = {
        "attributes": {**attrs, CHECKSUMS: json.dumps(sums, separators=(",", ":"))},
        "zarr_format": 3,
        "consolidated_metadata": {"kind": "inline", "must_understand": False, "metadata": metadata},
        "node_type": "group",
    }
    replace_file(path / "zarr.json", json.dumps(root, indent=2, allow_nan=True).encode())


def grid(meta: dict) -> tuple[int, ...]:
    """The number of chunks along each dim, from an array's metadata document."""
    shape = meta["shape"]
    chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
    # A dim of size 0 (no option on any open-ended sample) has a chunk size of 0 and no chunks.
    return tuple(-(-n // c) if c else 0 for n, c in zip(shape, chunks, strict=True))


def replace_file(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".flowtrace-{target.name}.{os.getpid()}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def vlen_strings(ds: xr.Dataset) -> xr.Dataset:
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
