"""Pieces every figure family shares: confidence bands, subtitles, saving."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

Z95 = 1.96


def analysed(ds: xr.Dataset) -> xr.Dataset:
    """The samples an intervention ran on."""
    return ds.isel(sample=ds["status"].values == "ok")


def window_label(ds: xr.Dataset) -> str:
    return f"window {ds.attrs.get('window')} ({ds.attrs.get('window_style')})"


def subtitle(ds: xr.Dataset, *parts: str) -> str:
    return " · ".join([f"{ds.attrs.get('model')}", f"{ds.attrs.get('data')}", *parts])


def titled(chart: alt.TopLevelMixin, title: str, sub: str) -> alt.TopLevelMixin:
    return chart.properties(title=alt.TitleParams(title, subtitle=sub, anchor="start"))


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% normal confidence interval of the non-NaN values."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    half = Z95 * float(values.std(ddof=1)) / np.sqrt(values.size) if values.size > 1 else 0.0
    return mean, mean - half, mean + half


def band(table: pd.DataFrame, x: str, y: str, color: str, title: str) -> alt.LayerChart:
    """Mean line with its confidence band (columns mean, low, high)."""
    base = alt.Chart(table)
    enc_x = alt.X(f"{x}:Q", axis=alt.Axis(tickMinStep=1))
    area = base.mark_area(opacity=0.2).encode(x=enc_x, y="low:Q", y2="high:Q", color=f"{color}:N")
    line = base.mark_line(point=True).encode(
        x=enc_x, y=alt.Y("mean:Q", title=y), color=f"{color}:N", tooltip=[color, x, "mean:Q"]
    )
    return (area + line).properties(width=320, height=220, title=title)


def save_chart(chart: alt.TopLevelMixin, stem: Path, scale: float = 2) -> list[Path]:
    """Write `stem`.html and `stem`.png (at `scale` × the chart's size) next to each other."""
    paths = [stem.with_suffix(".html"), stem.with_suffix(".png")]
    chart.save(str(paths[0]))
    chart.save(str(paths[1]), scale_factor=scale)
    return paths
