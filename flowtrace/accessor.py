"""The `ds.flowtrace` accessor, registered on xarray as soon as both flowtrace and xarray are
imported, in either order, without `import flowtrace` importing xarray (and pandas, ~1 s) itself.

`import flowtrace` calls `install()`: if xarray is already imported the accessor is registered at
once; otherwise a finder on `sys.meta_path` waits for the first `import xarray` (the user's
`xr.open_zarr` script, or flowtrace's own store) and registers it right after xarray's module has
run. This module imports nothing heavy: the helpers import what they need when called.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    import xarray as xr

NAME = "flowtrace"


class FlowtraceAccessor:
    """`ds.flowtrace.analysed()`, `.summary()`, `.table(...)`, `.chart()`, `.save_chart(stem)`."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def analysed(self) -> xr.Dataset:
        """Only the samples the recipe measured (status ok)."""
        from flowtrace.store import analysed

        return analysed(self._ds)

    def summary(self) -> str:
        from flowtrace.reading.summary import describe

        return "\n".join(describe(self._ds))

    def table(
        self, variable: str, mean: tuple[str, ...] = ("sample",), **selection
    ) -> pd.DataFrame:
        """One variable of the analysed samples, selected and averaged, as a tidy table.

        `selection`: a dim's value(s) (`layer=3`, `source=["video"]`), or a per-sample
        coordinate's (`task="Object Count"`), which keeps the samples that have it."""
        from flowtrace.errors import FlowtraceError
        from flowtrace.reading.query import per_sample_coords, select

        ds = self.analysed()
        if variable not in ds:
            raise FlowtraceError(
                f"table({variable!r}): not a variable of the store; it has "
                f"{', '.join(map(str, ds.data_vars))}"
            )
        by_sample = {k: v for k, v in selection.items() if k not in ds.dims}
        unknown = [k for k in by_sample if k not in per_sample_coords(ds)]
        if unknown:
            raise FlowtraceError(
                f"table({unknown[0]}=…): the store has dims {', '.join(map(str, ds.dims))} and "
                f"per-sample coordinates {', '.join(per_sample_coords(ds))}"
            )
        wanted = {
            k: [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
            for k, v in by_sample.items()
        }
        ds = select(ds, wanted, "the store")
        data = ds[variable].sel(**{k: v for k, v in selection.items() if k in ds.dims})
        return data.mean(list(mean)).to_dataframe().reset_index() if mean else data.to_dataframe()

    def chart(self):
        from flowtrace.plots import chart_for

        return chart_for(self._ds)

    def save_chart(self, stem: str | Path) -> list[Path]:
        from pathlib import Path

        from flowtrace.plots import save_chart

        return save_chart(self.chart(), Path(stem))


_registered = False


def register() -> None:
    """Register `ds.flowtrace` on xarray.Dataset (imports xarray); once, however often called."""
    global _registered
    if _registered:
        return
    import xarray as xr

    xr.register_dataset_accessor(NAME)(FlowtraceAccessor)
    _registered = True


class _AfterXarray:  # an importlib.abc.MetaPathFinder (not imported: ~10 ms)
    """Finds nothing itself: wraps the spec the other finders give for `xarray` so that its
    loader registers the accessor once xarray's module has run (then it leaves `sys.meta_path`).
    A spec only looked up (`importlib.util.find_spec`) and never loaded changes nothing."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "xarray" or _registered:
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                break
        else:
            return None  # not installed: the import fails as it would without flowtrace
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None or not hasattr(loader, "__dict__"):
            return spec  # a loader the wrapper cannot shadow: flowtrace.open still registers

        def exec_then_register(module):
            vars(loader).pop("exec_module", None)  # the loader's own method again
            exec_module(module)
            _uninstall()
            try:
                register()
            except Exception as err:  # noqa: BLE001 - never break the user's `import xarray`
                import warnings

                warnings.warn(f"flowtrace: ds.flowtrace not registered ({err!r})", stacklevel=2)

        # The loader of this one module: the wrapper shadows its method until it runs.
        loader.exec_module = exec_then_register
        return spec


_finder = _AfterXarray()


def _uninstall() -> None:
    while _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def install() -> None:
    """Register now if xarray is imported, else as soon as it is."""
    if _registered:
        return
    if "xarray" in sys.modules:
        register()
    elif _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
