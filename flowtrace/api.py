"""Notebook API: `flowtrace.open(path)`; the `ds.flowtrace` accessor (flowtrace.accessor)
is on
every xarray Dataset once flowtrace is imported."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from flowtrace.accessor import FlowtraceAccessor, register
from flowtrace.store import open_cube

__all__ = ["FlowtraceAccessor", "open"]

register()  # already done by `import flowtrace` when xarray came in; a no-op then


def open(path: str | Path) -> xr.Dataset:  # noqa: A001 - mirrors xarray.open_zarr
    """The cube of a store, with `ds.flowtrace.…` helpers."""
    return open_cube(path)
