"""Reading stores: open (naming damaged or missing chunks), check, count chunks, compact."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from flowtrace.cube import SAMPLE
from flowtrace.errors import StoreError
from flowtrace.store.arrays import vlen_strings, zarr_arrays
from flowtrace.store.lock import write_marker

EAGER_ELEMENTS = 50_000_000  # open_cube loads (and so verifies) stores up to this size


def compact(path: Path | str) -> None:
    """Rewrite a finished store with one chunk per array instead of blocks of samples: the same
    Dataset in a few dozen files (for stores kept in git). It is not resumed after."""
    path = Path(path)
    ds = vlen_strings(open_cube(path).load())
    for name in ds.variables:
        ds[name].encoding = {}
    encoding = {
        str(name): {"compressors": (ZstdCodec(), Crc32cCodec())}
        | ({"chunks": var.shape} if var.dims else {})
        for name, var in ds.variables.items()
    }
    staging = path.with_name(path.name + ".compact")
    shutil.rmtree(staging, ignore_errors=True)
    ds.to_zarr(
        staging,
        mode="w-",
        zarr_format=3,
        consolidated=True,
        encoding=encoding,
        write_empty_chunks=True,
    )
    write_marker(staging)
    shutil.rmtree(path)
    staging.rename(path)


def open_consolidated(path: Path) -> xr.Dataset:
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
        ds = open_consolidated(path)
    except ValueError:
        raise StoreError(
            f"store {path} holds no complete sample yet (its run is starting or was killed "
            "before the first samples were saved)"
        ) from None
    except Exception as err:  # noqa: BLE001 - a damaged metadata file
        raise StoreError(f"store {path}: its metadata cannot be read ({err})") from None
    missing = chunk_problems(path, decode=False)
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
                found = chunk_problems(path, names=[str(name)]) or chunk_problems(path)
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
    return chunk_problems(path)


def chunk_count(path: Path | str) -> int:
    """Chunks on disk over every array (what `check_store` reads)."""
    arrays = zarr_arrays(Path(path), "r", consolidated=True)
    return sum(int(a.nchunks_initialized) for _, a in arrays)


def chunk_problems(
    path: Path, decode: bool = True, names: Sequence[str] | None = None
) -> list[str]:
    try:
        group = zarr.open_group(path, mode="r", use_consolidated=True)
        arrays = zarr_arrays(path, "r", consolidated=True)
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
