"""The arrays on disk: their chunking and codecs, appends that grow them in place, truncation
to the whole samples, and the consolidated metadata written last."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from flowtrace.cube import SAMPLE

# Two zarr warnings that are not the user's concern, off once here rather than around each call
# (`catch_warnings` is not thread-safe, and the writer thread lists and consolidates stores): the
# lock and marker files beside the arrays are ours, not zarr's; consolidated metadata is a
# zarr-python extension of v3 that xarray reads fine.
warnings.filterwarnings("ignore", message=r"Object at \.flowtrace")
warnings.filterwarnings("ignore", message="Consolidated metadata")

STORE_FORMAT = 2  # 2: chunks of CHUNK_SAMPLES samples with checksums, NaN blocked_edges if skipped


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


def append_arrays(path: Path, ds: xr.Dataset, start: int) -> None:
    """Grow every sample-indexed array and write the new rows; only the arrays' own metadata and
    chunks change, not the root's, so readers keep the last whole state until consolidation."""
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


def truncate(path: Path, length: int) -> None:
    """Cut every sample-indexed array back to `length` (a killed flush may have grown some)."""
    arrays = zarr_arrays(path, "r+", consolidated=False)
    changed = False
    for _, array in arrays:
        names = array.metadata.dimension_names or ()
        if names and names[0] == SAMPLE and array.shape[0] != length:
            array.resize((length, *array.shape[1:]))
            changed = True
    if changed:
        consolidate(path)


def consolidate(path: Path) -> None:
    zarr.consolidate_metadata(path)


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
