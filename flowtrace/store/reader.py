"""Reading stores: open (naming damaged, missing or moved chunks and edited metadata), check,
count chunks, compact."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from flowtrace.errors import StoreError
from flowtrace.store import keys
from flowtrace.store.arrays import (
    CHECKSUMS,
    STORE_FORMAT,
    array_metadata,
    chunk_digests,
    chunk_key,
    commit,
    digest,
    values_digest,
    vlen_strings,
    zarr_arrays,
)
from flowtrace.store.cube import SAMPLE
from flowtrace.store.lock import (
    acquire_lock,
    is_flowtrace_store,
    marker_format,
    release_lock,
    write_marker,
)

EAGER_ELEMENTS = 50_000_000  # open_cube loads (and so verifies) stores up to this size


def compact(path: Path | str) -> None:
    """Rewrite a finished store with one chunk per array instead of blocks of samples: the same
    Dataset in a few dozen files (for stores kept in git). It is not resumed after."""
    path = Path(path)
    acquire_lock(path)  # no run writes it meanwhile
    swapped = False
    try:
        ds = vlen_strings(open_cube(path).load())
        ds.attrs[keys.FORMAT] = STORE_FORMAT
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
            consolidated=False,
            encoding=encoding,
            write_empty_chunks=True,
        )
        attrs = json.loads((staging / "zarr.json").read_bytes())["attributes"]
        commit(staging, attrs, chunk_digests(zarr_arrays(staging, "r", consolidated=False)))
        write_marker(staging)
        shutil.rmtree(path)  # the lock file too, still held: no run takes the old folder
        swapped = True
        staging.rename(path)
    finally:
        release_lock(path, remove=not swapped)  # never the new folder's: another run's


def read_root(path: Path) -> dict | None:
    """The store's root metadata document (`zarr.json`): None where there is none yet;
    StoreError where it cannot be read or parsed."""
    try:
        data = (Path(path) / "zarr.json").read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"store {path}: its metadata cannot be read ({err.strerror})") from None
    try:
        root = json.loads(data)
    except ValueError as err:
        raise StoreError(f"store {path}: its metadata (zarr.json) is damaged ({err})") from None
    if not isinstance(root, dict) or not isinstance(root.get("attributes", {}), dict):
        raise StoreError(f"store {path}: its metadata (zarr.json) is damaged (not a zarr group)")
    return root


def store_format(path: Path, attrs: dict) -> int:
    """The format a store was written in: the highest its marker, its attributes or its
    checksums say, so removing one of them does not turn the checks off."""
    try:
        said = int(attrs.get(keys.FORMAT, 1))
    except (TypeError, ValueError):
        said = 1
    return max(said, marker_format(path), STORE_FORMAT if CHECKSUMS in attrs else 0)


def is_started(path: Path, root: dict) -> bool:
    """Whether a root without consolidated metadata is a store whose first flush is not whole
    (an older flowtrace wrote the root first), rather than damage."""
    attrs = root.get("attributes") or {}
    return "consolidated_metadata" not in root and store_format(path, attrs) < 3


def metadata_problems(path: Path, root: dict) -> list[str]:
    """What of the root metadata does not match its checksums (none for a store written before
    them: see `unverified`)."""
    attrs = root.get("attributes") or {}
    raw = attrs.get(CHECKSUMS)
    if raw is None:
        if store_format(path, attrs) >= 3:
            return [f"store {path}: its metadata (zarr.json) lost its checksums: it was edited or "
                    "replaced after it was written"]  # fmt: skip
        return []
    try:
        sums = json.loads(raw)
        arrays, chunks = dict(sums["arrays"]), dict(sums["chunks"])
        said = sums["attributes"]
    except (TypeError, ValueError, KeyError):
        return [f"store {path}: the checksums in its metadata (zarr.json) are damaged"]
    problems = []
    if digest({k: v for k, v in attrs.items() if k != CHECKSUMS}) != said:
        problems.append(
            f"store {path}: its attributes (zarr.json) were changed after they were written"
        )
    meta = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    for name in sorted(set(meta) | set(arrays)):
        where = f"store {path}: array {name}"
        if name not in meta:
            problems.append(f"{where} is missing from its metadata (zarr.json)")
        elif name not in arrays:
            problems.append(f"{where} was not written by flowtrace (it has no checksum)")
        elif digest(meta[name]) != arrays[name]:
            problems.append(
                f"{where}: its metadata (shape, type or codecs) was changed after it was written"
            )
    if not problems and not chunks and arrays:
        problems.append(f"store {path}: the checksums in its metadata (zarr.json) are damaged")
    return problems


def own_metadata_problems(path: Path, root: dict) -> list[str]:
    """Each array's own `zarr.json` against the root's copy: the same, but for a sample count
    that a flush cut short may have grown."""
    meta = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    try:
        own = array_metadata(path)
    except (OSError, ValueError) as err:
        return [f"store {path}: an array's metadata cannot be read ({err})"]
    problems = []
    for name, consolidated in meta.items():
        mine = own.get(name)
        where = f"store {path}: array {name}"
        if mine is None:
            problems.append(f"{where}: its folder or its zarr.json is missing")
            continue
        a, b = list(consolidated.get("shape", [])), list(mine.get("shape", []))
        grown = len(a) == len(b) and a[1:] == b[1:] and a[:1] <= b[:1]
        rest = ({**consolidated, "shape": None}, {**mine, "shape": None})
        if not grown or rest[0] != rest[1]:
            problems.append(f"{where}: its own zarr.json differs from the store's metadata")
    return problems


def open_consolidated(path: Path) -> xr.Dataset:
    # The consolidated metadata is replaced last by every flush: it describes whole samples only.
    return xr.open_zarr(path, consolidated=True)


def analysed_mask(ds: xr.Dataset) -> xr.DataArray:
    """Per sample, whether the recipe measured it: status "ok", neither skipped (by the sample
    mode) nor failed. The one definition every reader's "analysed samples" uses."""
    return ds["status"] == "ok"


def analysed(ds: xr.Dataset) -> xr.Dataset:
    """Only the samples the recipe measured (`analysed_mask`)."""
    return ds.isel(sample=analysed_mask(ds).values)


def open_cube(path: Path | str, load: bool | None = None) -> xr.Dataset:
    """Open a store's whole samples; edited metadata, or a missing, damaged or misplaced chunk,
    is an error naming the array and the samples it holds. `load` (default: stores up to
    EAGER_ELEMENTS values) reads and verifies every array now, so damage shows here instead of
    in a later computation."""
    path = Path(path)
    root = read_root(path)
    if root is None or is_started(path, root):
        if root is None and not is_flowtrace_store(path):
            raise StoreError(f"store {path} does not exist (or is not a zarr store)")
        raise StoreError(
            f"store {path} holds no complete sample yet (its run is starting or was killed "
            "before the first samples were saved)"
        )
    damage = metadata_problems(path, root)
    if damage:
        raise StoreError(f"{damage[0]}; run `flowtrace check {path}` for every problem")
    try:
        ds = open_consolidated(path)
    except Exception as err:  # noqa: BLE001 - a damaged metadata file
        raise StoreError(f"store {path}: its metadata cannot be read ({err})") from None
    ds.attrs.pop(CHECKSUMS, None)
    if load is None:
        load = sum(v.size for v in ds.variables.values()) <= EAGER_ELEMENTS
    # Missing chunks first (cheap: no chunk is read), then, when loading, every chunk's values.
    found = chunk_problems(path, decode=False) or (chunk_problems(path) if load else [])
    if found:
        raise StoreError(f"{found[0]}; run `flowtrace check {path}` for every damaged chunk")
    if load:
        for name in list(ds.variables):
            try:
                ds[name].load()
            except Exception:  # noqa: BLE001 - verified above; changed since
                raise StoreError(
                    f"store {path}: array {name} cannot be read; run `flowtrace check {path}`"
                ) from None
    return ds


def check_store(path: Path | str) -> list[str]:
    """Every chunk of every array read and verified against its checksums, and the metadata
    against its own: the problems found (empty when the store is whole, or when it was written
    before checksums: see `unverified`)."""
    path = Path(path)
    try:
        root = read_root(path)
    except StoreError as err:
        return [str(err)]
    if root is None or is_started(path, root):
        open_cube(path, load=False)  # raises the reason: no store, or no sample yet
    problems = metadata_problems(path, root) + own_metadata_problems(path, root)
    return problems + chunk_problems(path)


def unverified(path: Path | str) -> str | None:
    """Why a store cannot be verified (written before its checksums), or None."""
    path = Path(path)
    attrs = (read_root(path) or {}).get("attributes") or {}
    found = store_format(path, attrs)
    if found >= 3:
        return None
    if found == 2:
        return (
            f"store {path} was written by a flowtrace from before its metadata had checksums "
            "(store format 2): its chunks' CRC32C checksums were verified, but an edited sample "
            "count or a chunk moved from another array or store cannot be found; rerun it into a "
            "new out for a store that can be verified"
        )
    return (
        f"store {path} was written before checksums (store format 1, or not by flowtrace): "
        "damage in it cannot be found; rerun it into a new out for a store that can be verified"
    )


def chunk_count(path: Path | str) -> int:
    """Chunks on disk over every array (what `check_store` reads)."""
    arrays = zarr_arrays(Path(path), "r", consolidated=True)
    return sum(int(a.nchunks_initialized) for _, a in arrays)


def chunk_problems(
    path: Path, decode: bool = True, names: Sequence[str] | None = None
) -> list[str]:
    """Missing chunks and, with `decode`, chunks whose CRC32C fails or whose values are not the
    ones the checksums say were written at that array and position."""
    try:
        # One read of the root: the arrays' shapes and the checksums are of the same flush.
        group = zarr.open_group(path, mode="r", use_consolidated=True)
        arrays = list(group.arrays())
        attrs = dict(group.attrs)
    except Exception as err:  # noqa: BLE001
        return [f"store {path}: its metadata cannot be read ({err})"]
    # Before format 2, chunks holding only fill values were not written: absence is no damage.
    complete = store_format(path, attrs) >= 2
    try:
        sums = json.loads(attrs[CHECKSUMS])["chunks"] if CHECKSUMS in attrs else None
    except (TypeError, ValueError, KeyError):
        return [f"store {path}: the checksums in its metadata (zarr.json) are damaged"]
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
            key = chunk_key(index)
            if not (path / name / key).is_file():
                if complete:
                    problems.append(f"{where}: chunk {key} is missing")
                continue
            if not decode:
                continue
            try:
                values = array.blocks[index]
            except Exception as err:  # noqa: BLE001 - checksum, codec or short file
                problems.append(f"{where}: chunk {key} is damaged ({type(err).__name__})")
                continue
            if sums is not None and sums.get(f"{name}/{key}") != values_digest(values):
                problems.append(
                    f"{where}: chunk {key} does not hold what was written there (a chunk of "
                    "another array or store, or changed)"
                )
    return problems
