"""Cubes on disk: one xarray Dataset per run as a zarr v3 store, appended sample by sample.

Strings are written as variable-length (object) arrays so samples with longer text append cleanly.
Metadata is consolidated at the end of every append (zarr writes files atomically), so
`xarray.open_zarr(path)`, which reads the consolidated metadata, always sees whole samples, even
while a run is appending or after it was killed mid-write; resuming cuts the arrays back to that
length before appending again.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from flowtrace.errors import FlowtraceError

SAMPLE = "sample"


# Attributes that must match for a run to continue an existing store.
RESUME_KEYS = (
    "recipe", "recipe_kind", "recipe_source", "edges", "model", "model_revision", "adapter",
    "dtype", "attn", "data", "data_root", "tasks", "limit", "frames", "pooling", "window",
    "window_style", "sweep", "sample_mode", "eval_only", "engine", "seed", "overlay_layers",
    "data_kind", "ratio", "heads", "generate",
)  # fmt: skip


class CubeStore:
    """Append-only store of one run; an existing store of the same run is resumed."""

    def __init__(self, path: Path, attrs: dict[str, str | int | float], overwrite: bool = False):
        self.path = Path(path)
        self.attrs = attrs
        self.done: set[str] = set()  # sample ids already in the store
        self._written = 0
        if self.path.exists() and overwrite:
            shutil.rmtree(self.path)
        elif self.path.exists():
            self._resume()

    def _resume(self) -> None:
        if not (self.path / "zarr.json").is_file():
            raise FlowtraceError(
                f"--out {self.path} exists and is not a zarr store; choose another --out"
            )
        try:
            ds = _open_consolidated(self.path)
        except ValueError:
            # No consolidated metadata: killed before its first sample was complete.
            shutil.rmtree(self.path)
            return
        differ = [
            f"{key}: {ds.attrs.get(key)!r} there, {self.attrs.get(key)!r} now"
            for key in RESUME_KEYS
            if str(ds.attrs.get(key)) != str(self.attrs.get(key))
        ]
        if differ:
            raise FlowtraceError(
                f"--out {self.path} holds another run ({'; '.join(differ)}); pass --overwrite "
                "to replace it or choose another --out"
            )
        self._written = ds.sizes[SAMPLE]
        self.done = {str(s) for s in ds[SAMPLE].values}
        _truncate(self.path, self._written)

    def append(self, sample: xr.Dataset) -> None:
        """Write one sample (or a few) so a run killed later keeps everything appended so far."""
        ds = _vlen_strings(sample)
        # Appends rewrite the group's attributes: carry the provenance on every write.
        ds.attrs.update(self.attrs)
        with warnings.catch_warnings():
            # Consolidated metadata is a zarr-python extension of v3; xarray reads it fine.
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            if self._written == 0:
                ds.to_zarr(self.path, mode="w-", zarr_format=3, consolidated=True)
            else:
                ds.to_zarr(self.path, append_dim=SAMPLE, consolidated=True)
        self._written += ds.sizes[SAMPLE]


def compact(path: Path | str) -> None:
    """Rewrite a finished store with one chunk per array instead of one per appended sample:
    the same Dataset in a few dozen files (for stores kept in git). It is not resumed after."""
    path = Path(path)
    ds = _vlen_strings(open_cube(path).load())
    for name in ds.variables:
        ds[name].encoding = {}
    staging = path.with_name(path.name + ".compact")
    shutil.rmtree(staging, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds.to_zarr(staging, mode="w-", zarr_format=3, consolidated=True)
    shutil.rmtree(path)
    staging.rename(path)


def _truncate(path: Path, length: int) -> None:
    """Cut every sample-indexed array back to `length` (a killed append may have grown some)."""
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    for _, array in group.arrays():
        names = array.metadata.dimension_names or ()
        if names and names[0] == SAMPLE and array.shape[0] != length:
            array.resize((length, *array.shape[1:]))
    zarr.consolidate_metadata(path)


def _open_consolidated(path: Path) -> xr.Dataset:
    # Consolidated metadata is written at the end of every append: it describes whole samples only.
    return xr.open_zarr(path, consolidated=True)


def open_cube(path: Path | str) -> xr.Dataset:
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise FlowtraceError(f"store {path} does not exist (or is not a zarr store)")
    try:
        return _open_consolidated(path)
    except ValueError:
        raise FlowtraceError(
            f"store {path} holds no complete sample yet (its run is starting or was killed "
            "before the first sample was saved)"
        ) from None


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
