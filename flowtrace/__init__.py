"""flowtrace: map how information flows inside video LLMs."""

__version__ = "0.1.0"


def open(path):  # noqa: A001 - mirrors xarray.open_zarr
    """Open a flowtrace store as an xarray Dataset with the `ds.flowtrace` accessor."""
    from flowtrace.api import open as _open

    return _open(path)
