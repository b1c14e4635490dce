"""What every curve figure draws the same way: bands clipped to the measure's range, legends in
the lines' colours, and a y range shared across panels and runs on request."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from flowtrace.errors import FlowtraceError

# The values a measure can take: a probability lies in [0, 1]; a relative change of one cannot
# fall below −100% (p → 0) and has no useful upper bound. A normal-theory band is clipped to it.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "rel_change_pred": (-100.0, None),
    "rel_change_true": (-100.0, None),
    "prob_pred": (0.0, 1.0),
    "prob_true": (0.0, 1.0),
    "prob_false": (0.0, 1.0),
    "probability": (0.0, 1.0),
}

TITLES = {
    "rel_change_pred": "relative change in p(answer) (%)",
    "rel_change_true": "relative change in p(true letter) (%)",
    "prob_pred": "p(clean answer)",
    "prob_true": "p(true letter)",
}


def clip_band(table: pd.DataFrame, measure: str) -> pd.DataFrame:
    """`low` and `high` (the band) clipped to the measure's range, the mean left as it is."""
    low, high = RANGES.get(measure, (None, None))
    table = table.copy()
    for column in ("low", "high"):
        if column in table:
            table[column] = np.clip(table[column].astype(float), low, high)
    return table


def parse_y_range(text: str | None) -> tuple[float, float] | None:
    """`-100,20` -> (-100.0, 20.0): the y range every panel shares (None: each fits its data)."""
    if not text:
        return None
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise FlowtraceError(f"y_range={text}: give LOW,HIGH, e.g. -100,20") from None
    if not low < high:
        raise FlowtraceError(f"y_range={text}: LOW must be below HIGH")
    return low, high


def y_scale(y_range: tuple[float, float] | None) -> alt.Scale:
    """A fixed domain that clamps what lies outside it, or the default fit to the data."""
    if y_range is None:
        return alt.Scale(zero=False)
    return alt.Scale(domain=list(y_range), clamp=True, nice=False)


def band_fill(field: str) -> alt.Fill:
    """A band's colour, as `fill`: a scale of its own with the lines' domain and scheme (so the
    same colours) and no legend, so that the legend is the lines', in their full colour, not the
    band's pale fill (the same field on `color` merges both into one legend of pale swatches)."""
    return alt.Fill(f"{field}:N", legend=None)


def colour(field: str, title: str | None) -> alt.Color:
    """A line's colour, with the legend."""
    return alt.Color(f"{field}:N", title=title)


def band(table: pd.DataFrame, x: str, y: str, series: str, title: str) -> alt.LayerChart:
    """Mean line with its confidence band (columns mean, low, high), the legend in line colours."""
    base = alt.Chart(table)
    enc_x = alt.X(f"{x}:Q", axis=alt.Axis(tickMinStep=1))
    area = base.mark_area(opacity=0.2).encode(
        x=enc_x, y="low:Q", y2="high:Q", fill=band_fill(series)
    )
    line = base.mark_line(point=True).encode(
        x=enc_x,
        y=alt.Y("mean:Q", title=y),
        color=colour(series, None),
        tooltip=[series, x, alt.Tooltip("mean:Q", format=".3f")],
    )
    return (area + line).properties(width=320, height=220, title=title)


def layer_x(layers, title: str | None = None) -> alt.X:
    """The layer axis over exactly the layers drawn: Vega's rounded domain ran a 32-layer model's
    axis on to 35, past the last layer."""
    values = np.asarray(list(layers), dtype=float)
    domain = [float(np.nanmin(values)), float(np.nanmax(values))] if values.size else [0.0, 1.0]
    extra = {} if title is None else {"title": title}
    return alt.X(
        "layer:Q",
        scale=alt.Scale(domain=domain, nice=False),
        axis=alt.Axis(tickMinStep=1),
        **extra,
    )
