"""Notebook API: `flowtrace.open(path)` and the `ds.flowtrace` accessor on any cube."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import xarray as xr

from flowtrace.store import open_cube


def open(path: str | Path) -> xr.Dataset:  # noqa: A001 - mirrors xarray.open_zarr
    """The cube of a store, with `ds.flowtrace.…` helpers."""
    return open_cube(path)


@xr.register_dataset_accessor("flowtrace")
class FlowtraceAccessor:
    """`ds.flowtrace.analysed()`, `.summary()`, `.table(...)`, `.chart()`, `.save_chart(stem)`."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def analysed(self) -> xr.Dataset:
        """Only the samples the recipe measured (status ok)."""
        return self._ds.isel(sample=self._ds["status"].values == "ok")

    def summary(self) -> str:
        from flowtrace.summary import describe

        return "\n".join(describe(self._ds))

    def table(
        self, variable: str, mean: tuple[str, ...] = ("sample",), **selection
    ) -> pd.DataFrame:
        """One variable of the analysed samples, selected and averaged, as a tidy table."""
        data = self.analysed()[variable].sel(**selection)
        return data.mean(list(mean)).to_dataframe().reset_index() if mean else data.to_dataframe()

    def chart(self):
        from flowtrace.plots import chart_for

        return chart_for(self._ds)

    def save_chart(self, stem: str | Path) -> list[Path]:
        from flowtrace.plots import save_chart

        return save_chart(self.chart(), Path(stem))
