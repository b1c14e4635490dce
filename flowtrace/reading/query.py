"""Select, reduce and export cubes with xarray semantics (`flowtrace query`)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from flowtrace.errors import FlowtraceError
from flowtrace.outputs import claims, is_a_folder
from flowtrace.store import analysed, open_cube


def parse_selection(text: str | None) -> dict[str, list[str]]:
    """`source=video,target=last|question` -> {"source": ["video"], "target": [last, question]}."""
    if not text:
        return {}
    selection = {}
    for part in text.split(","):
        if "=" not in part:
            raise FlowtraceError(f"sel={text}: write DIM=VALUE[|VALUE…], comma-separated")
        dim, values = part.split("=", 1)
        selection[dim.strip()] = [v.strip() for v in values.split("|")]
    return selection


def store_labels(paths: Sequence[Path], labels: Sequence[str] | None = None) -> dict[str, Path]:
    """A unique label per store, in order: `labels` as given, else each store's path relative to
    the stores' common folder, without `.zarr` (results/toy/x.zarr and results/planted/x.zarr
    are toy/x and planted/x; one store, or stores of one folder, are their names). Two stores
    under one label are refused, never one dropped."""
    paths = [Path(p) for p in paths]
    if labels:
        if len(labels) != len(paths):
            raise FlowtraceError(
                f"labels={','.join(labels)}: {len(labels)} labels for {len(paths)} stores; "
                "give one per store, in the stores' order"
            )
        names = [str(label) for label in labels]
    else:
        absolute = [p.absolute() for p in paths]
        common = Path(os.path.commonpath([p.parent for p in absolute]))
        relative = [p.relative_to(common) for p in absolute]
        # Less `.zarr` only: a store named exp.a keeps its dot (Path.with_suffix would cut it).
        names = [(r.parent / (r.name.removesuffix(".zarr") or r.name)).as_posix() for r in relative]
    out: dict[str, Path] = {}
    for name, path in zip(names, paths, strict=True):
        if name in out:
            raise FlowtraceError(
                f"labels={name}: names two stores ({out[name]} and {path}); give each store "
                "once, or each its own label"
            )
        out[name] = path
    return out


def query(
    stores: list[Path],
    selection: dict[str, list[str]],
    mean: list[str],
    variables: list[str] | None = None,
    analysed_only: bool = True,
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One table from one or more stores; several stores gain a `run` column (`store_labels`)."""
    named = store_labels(stores, labels)
    frames = []
    for label, path in named.items():
        ds = open_cube(path)
        if analysed_only:
            ds = analysed(ds)
        ds = select(ds, selection, path)
        if variables:
            missing = [v for v in variables if v not in ds]
            if missing:
                raise FlowtraceError(
                    f"var={', '.join(missing)}: not in {path}; it has {', '.join(ds.data_vars)}"
                )
            ds = ds[variables]
        numeric = [
            v for v in ds.data_vars if np.issubdtype(ds[v].dtype, np.number) or ds[v].dtype == bool
        ]
        ds = ds[numeric]
        for dim in mean:
            if dim not in ds.dims:
                raise FlowtraceError(f"mean={dim}: {path} has dims {', '.join(ds.dims)}")
        if mean:
            ds = ds.mean(mean)
        table = ds.drop_vars([c for c in ds.coords if c not in ds.dims]).to_dataframe()
        table = table.reset_index()
        if len(named) > 1 or labels:
            table.insert(0, "run", label)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def per_sample_coords(ds: xr.Dataset) -> list[str]:
    """The coordinates along `sample` alone (task, video, status, …), which select samples."""
    return [str(c) for c in ds.coords if c != "sample" and ds[c].dims == ("sample",)]


def select(ds: xr.Dataset, selection: dict[str, list[str]], path: Path | str) -> xr.Dataset:
    """`selection` applied: a dim keeps the values named; a per-sample coordinate (task, …) keeps
    the samples whose value is named."""
    for dim, values in selection.items():
        if dim not in ds.dims and dim in per_sample_coords(ds):
            index = np.asarray([str(v) for v in ds[dim].values])
            unknown = [v for v in values if v not in set(index)]
            if unknown:
                shown = ", ".join(sorted(set(index))[:12])
                raise FlowtraceError(
                    f"sel={dim}={'|'.join(unknown)}: not in {path}; values: {shown}"
                )
            ds = ds.isel(sample=np.isin(index, values))
            continue
        if dim not in ds.dims:
            raise FlowtraceError(
                f"sel={dim}=…: {path} has dims {', '.join(ds.dims)} and per-sample "
                f"coordinates {', '.join(per_sample_coords(ds))}"
            )
        index = ds[dim].values
        wanted = [_cast(value, index) for value in values]
        unknown = [str(v) for v in wanted if v not in set(index.tolist())]
        if unknown:
            shown = ", ".join(str(x) for x in index.tolist()[:12])
            raise FlowtraceError(f"sel={dim}={'|'.join(unknown)}: not in {path}; values: {shown}")
        ds = ds.sel({dim: wanted})
    return ds


def _cast(value: str, index: np.ndarray) -> object:
    return int(value) if np.issubdtype(index.dtype, np.integer) else value


def write_table(table: pd.DataFrame, fmt: str, out: Path | None) -> str | None:
    """CSV or JSON to stdout (returned) or to `out`; Parquet needs `out`. A file is written
    whole, and replaces only a table flowtrace wrote there (flowtrace.outputs)."""
    if out is not None and Path(out).is_dir():
        raise is_a_folder(Path(out), "out")
    if fmt == "parquet":
        if out is None:
            raise FlowtraceError("parquet=True needs out=FILE")
        buffer = io.BytesIO()
        try:
            table.to_parquet(buffer, index=False)
        except ImportError:
            raise FlowtraceError("parquet=True needs pyarrow: pip install pyarrow") from None
        _write(Path(out), buffer.getvalue())
        return None
    text = table.to_csv(index=False) if fmt == "csv" else table.to_json(orient="records", indent=1)
    if out is None:
        return text
    _write(Path(out), text)
    return None


def _write(out: Path, data: bytes | str) -> None:
    with claims(out.parent) as held:
        held.write(out, data, "flowtrace query")
