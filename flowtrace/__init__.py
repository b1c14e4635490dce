"""flowtrace: map how information flows inside video LLMs."""

from flowtrace import accessor as _accessor

__version__ = "0.1.0"

# `ds.flowtrace` on every xarray Dataset: now if xarray is imported, else at its import (this
# import stays free of xarray and pandas, which every `flowtrace` command would pay for).
_accessor.install()


def open(path):  # noqa: A001 - mirrors xarray.open_zarr
    """Open a flowtrace store as an xarray Dataset with the `ds.flowtrace` accessor."""
    from flowtrace.api import open as _open

    return _open(path)
