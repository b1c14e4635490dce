"""Select, reduce and export cubes with xarray semantics (`flowtrace query`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from flowtrace.errors import FlowtraceError
from flowtrace.store import open_cube


def parse_selection(text: str | None) -> dict[str, list[str]]:
    """`source=video,target=last|question` -> {"source": ["video"], "target": [last, question]}."""
    if not text:
        return {}
    selection = {}
    for part in text.split(","):
        if "=" not in part:
            raise FlowtraceError(f"--sel {text}: write DIM=VALUE[|VALUE…], comma-separated")
        dim, values = part.split("=", 1)
        selection[dim.strip()] = [v.strip() for v in values.split("|")]
    return selection


def query(
    stores: list[Path],
    selection: dict[str, list[str]],
    mean: list[str],
    variables: list[str] | None = None,
    analysed_only: bool = True,
) -> pd.DataFrame:
    """One table from one or more stores; several stores gain a `run` column (their file stem)."""
    frames = []
    for path in stores:
        ds = open_cube(path)
        if analysed_only:
            ds = ds.isel(sample=ds["status"].values == "ok")
        ds = _select(ds, selection, path)
        if variables:
            missing = [v for v in variables if v not in ds]
            if missing:
                raise FlowtraceError(
                    f"--var {', '.join(missing)}: not in {path}; it has {', '.join(ds.data_vars)}"
                )
            ds = ds[variables]
        numeric = [
            v for v in ds.data_vars if np.issubdtype(ds[v].dtype, np.number) or ds[v].dtype == bool
        ]
        ds = ds[numeric]
        for dim in mean:
            if dim not in ds.dims:
                raise FlowtraceError(f"--mean {dim}: {path} has dims {', '.join(ds.dims)}")
        if mean:
            ds = ds.mean(mean)
        table = ds.drop_vars([c for c in ds.coords if c not in ds.dims]).to_dataframe()
        table = table.reset_index()
        if len(stores) > 1:
            table.insert(0, "run", Path(path).stem)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def _select(ds: xr.Dataset, selection: dict[str, list[str]], path: Path) -> xr.Dataset:
    for dim, values in selection.items():
        if dim not in ds.dims:
            raise FlowtraceError(f"--sel {dim}=…: {path} has dims {', '.join(ds.dims)}")
        index = ds[dim].values
        wanted = [_cast(value, index) for value in values]
        unknown = [str(v) for v in wanted if v not in set(index.tolist())]
        if unknown:
            shown = ", ".join(str(x) for x in index.tolist()[:12])
            raise FlowtraceError(f"--sel {dim}={'|'.join(unknown)}: not in {path}; values: {shown}")
        ds = ds.sel({dim: wanted})
    return ds


def _cast(value: str, index: np.ndarray) -> object:
    return int(value) if np.issubdtype(index.dtype, np.integer) else value


def write_table(table: pd.DataFrame, fmt: str, out: Path | None) -> str | None:
    """CSV or JSON to stdout (returned) or to `out`; Parquet needs `out`."""
    if fmt == "parquet":
        if out is None:
            raise FlowtraceError("--parquet needs --out FILE")
        try:
            table.to_parquet(out, index=False)
        except ImportError:
            raise FlowtraceError("--parquet needs pyarrow: pip install pyarrow") from None
        return None
    text = table.to_csv(index=False) if fmt == "csv" else table.to_json(orient="records", indent=1)
    if out is None:
        return text
    out.write_text(text)
    return None
