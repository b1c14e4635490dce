"""Cubes on disk: one xarray Dataset per run as a zarr v3 store, appended sample by sample.

Strings are written as variable-length (object) arrays so samples with longer text append cleanly.
Metadata is consolidated after every write so plain `xarray.open_zarr(path)` opens it at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from flowtrace.errors import FlowtraceError

SAMPLE = "sample"


class CubeStore:
    def __init__(self, path: Path, attrs: dict[str, str | int | float], overwrite: bool = False):
        self.path = Path(path)
        self.attrs = attrs
        if self.path.exists() and not overwrite:
            raise FlowtraceError(
                f"--out {self.path} already exists; pass --overwrite to replace it or choose "
                "another --out"
            )
        self._overwrite = overwrite
        self._written = 0

    def append(self, sample: xr.Dataset) -> None:
        """Write one sample (or a few) so a run killed later keeps everything appended so far."""
        ds = _vlen_strings(sample)
        # Appends rewrite the group's attributes: carry the provenance on every write.
        ds.attrs.update(self.attrs)
        with warnings.catch_warnings():
            # Consolidated metadata is a zarr-python extension of v3; xarray reads it fine.
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            if self._written == 0:
                mode = "w" if self._overwrite else "w-"
                ds.to_zarr(self.path, mode=mode, zarr_format=3, consolidated=True)
            else:
                ds.to_zarr(self.path, append_dim=SAMPLE, consolidated=True)
        self._written += ds.sizes[SAMPLE]


def open_cube(path: Path | str) -> xr.Dataset:
    path = Path(path)
    if not path.exists():
        raise FlowtraceError(f"store {path} does not exist")
    return xr.open_zarr(path)


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
