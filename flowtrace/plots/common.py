"""Pieces every figure family shares: confidence bands, subtitles, and saving: the one place
a figure's file names are derived, each file written whole and never over another's (see
`save_chart`, `save_store_figure`), and the budget of cells a figure may draw."""

from __future__ import annotations

import html
import io
import json
import os
import warnings
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from flowtrace.errors import FlowtraceError, OptionError
from flowtrace.outputs import OutputWarning, claims
from flowtrace.paths import store_stem
from flowtrace.store import keys

Z95 = 1.96


def window_label(ds: xr.Dataset) -> str:
    return f"window {ds.attrs.get(keys.WINDOW)} ({ds.attrs.get(keys.WINDOW_STYLE)})"


def subtitle(ds: xr.Dataset, *parts: str) -> str:
    return " · ".join([f"{ds.attrs.get(keys.MODEL)}", f"{ds.attrs.get(keys.DATA)}", *parts])


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


# The most rows of data one figure draws (docs/errors.md, "Figures"): a figure of a 6000 × 6000
# program output took more than 15.8 GB to draw; a million rows take a few hundred MB.
# FLOWTRACE_FIGURE_CELLS sets another budget.
FIGURE_CELLS = 1_000_000


class FigureTooLarge(FlowtraceError):
    """A figure would draw more than its cell budget; nothing was drawn."""


def figure_cells() -> int:
    value = os.environ.get("FLOWTRACE_FIGURE_CELLS", "")
    return int(value) if value.isdigit() and int(value) > 0 else FIGURE_CELLS


def check_cells(ds: xr.Dataset, name: str) -> None:
    """Refuse, before drawing, a figure of `name` whose cells per sample exceed the budget."""
    sizes = {d: int(ds.sizes[d]) for d in ds[name].dims if d != "sample"}
    cells = int(np.prod(list(sizes.values()), dtype=np.int64)) if sizes else 1
    if cells > figure_cells():
        shape = " × ".join(f"{n} {d}" for d, n in sizes.items())
        raise FigureTooLarge(
            f"the figure of {ds.attrs.get(keys.RECIPE, 'this store')} would draw {name} with "
            f"{shape} = {cells:,} cells per sample, over the {figure_cells():,} a figure draws; "
            "nothing was drawn: select or average it with `flowtrace query` (the sel setting, "
            "the mean setting) "
            "and draw that table"
        )


def chart_rows(chart: object) -> int:
    """Rows of data a chart holds, over its layers and panels (before it is drawn)."""
    rows = 0
    data = getattr(chart, "data", None)
    if isinstance(data, pd.DataFrame):
        rows += len(data)
    elif isinstance(data, alt.InlineData) and isinstance(data.values, str | list):
        rows += data.values.count("\n") if isinstance(data.values, str) else len(data.values)
    for part in ("layer", "hconcat", "vconcat", "concat"):
        children = getattr(chart, part, None)
        if isinstance(children, list):
            rows += sum(chart_rows(child) for child in children)
    spec = getattr(chart, "spec", None)
    if spec is not None and not isinstance(spec, type(alt.Undefined)):
        rows += chart_rows(spec)
    return rows


def check_rows(chart: alt.TopLevelMixin) -> None:
    """Refuse a chart holding more rows than the budget, before it is serialised or drawn."""
    rows = chart_rows(chart)
    if rows > figure_cells():
        raise FigureTooLarge(
            f"the figure would draw {rows:,} rows of data, over the {figure_cells():,} a figure "
            "draws; nothing was drawn: select or average the store with `flowtrace query` "
            "(the sel setting, the mean setting) and draw that table"
        )


# Draws the page's figure with the runtime bundled beside it (as the report does), and marks the
# body drawn or failed so a reader (or a test) knows when it is done.
DRAW = """
const spec = JSON.parse(document.getElementById("ft-spec").textContent);
const target = document.getElementById("ft-figure");
vegaEmbed(target, spec, {renderer: "svg"}).then(
  (result) => { window.ftView = result.view; document.body.dataset.drawn = "1"; },
  (error) => { console.error(error); target.textContent = String(error);
               document.body.dataset.drawn = "error"; },
);
"""


def script_json(data: dict) -> str:
    """JSON that may sit inside a <script> element: no `<`, `>` or `&` as such (a title holding
    `</script>` cannot end the element), nor line separators."""
    text = json.dumps(_finite(data), separators=(",", ":"), allow_nan=False)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _finite(value: object) -> object:
    """`value` with NaN and infinities as null, which JSON (unlike a script literal) lacks."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# The runtime a folder of figures shares (`figure_html(runtime=…)`): defines window.vegaEmbed.
def runtime_bundle() -> str:
    import vl_convert

    return vl_convert.javascript_bundle("window.vegaEmbed = vegaEmbed;")


def figure_html(chart: alt.TopLevelMixin, runtime: str | None = None) -> str:
    """A figure's page that draws offline, from a file, with no network: Vega, Vega-Lite and
    vega-embed inlined (vl_convert's bundle, the report's runtime), the spec as JSON data.
    `runtime`: the relative URL of a `runtime_bundle()` file the page loads instead of carrying
    its own (0.9 MB a page: the committed results share one)."""
    import vl_convert

    if runtime is not None:
        # Classic scripts, as the report's site pages: a module script from a file:// page is
        # refused by the browser (its origin is null).
        draw = f'<script src="{html.escape(runtime)}"></script>\n<script>{DRAW}</script>\n'

    else:
        draw = f'<script type="module">{vl_convert.javascript_bundle(DRAW)}</script>\n'

    spec = chart.to_dict()
    title = spec.get("title", "")
    title = title.get("text", "") if isinstance(title, dict) else title
    title = " ".join(title) if isinstance(title, list) else str(title)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title or 'flowtrace figure')}</title></head><body>\n"
        '<div id="ft-figure"></div>\n'
        f'<script type="application/json" id="ft-spec">{script_json(spec)}</script>\n'
        f"{draw}</body></html>\n"
    )


def render(
    chart: alt.TopLevelMixin, scale: float = 2, runtime: str | None = None
) -> tuple[bytes, bytes]:
    """The chart as HTML (offline: `figure_html`) and PNG bytes (at `scale` × its size);
    refused above the budget."""
    check_rows(chart)
    image = io.BytesIO()
    page = figure_html(chart, runtime)
    chart.save(image, format="png", scale_factor=scale)
    return page.encode("utf-8"), image.getvalue()


def figure_files(stem: Path) -> list[Path]:
    """`stem`.html and `stem`.png, every dot of the stem kept (`threshold_0.25` ->
    `threshold_0.25.png`, where `with_suffix` would write `threshold_0.png`)."""
    stem = Path(stem)
    return [stem.with_name(stem.name + ".html"), stem.with_name(stem.name + ".png")]


def figure_stem(store: Path) -> Path:
    """Where a store's figure goes: beside it, named as the store less `.zarr` (`exp.a.zarr` ->
    `exp.a`). The one place a figure's name is derived from its store."""
    store = Path(store)
    return store.parent / store_stem(store)


def save_chart(
    chart: alt.TopLevelMixin,
    stem: Path,
    scale: float = 2,
    *,
    owner: str | None = None,
    replace: bool = False,
    param: str = "out",
    runtime: str | None = None,
) -> list[Path]:
    """Write `stem`.html and `stem`.png (at `scale` × the chart's size) next to each other, each
    whole (flowtrace.outputs). An existing file is replaced only where flowtrace wrote it for
    `owner` (default: the stem's name) and it is unchanged since; otherwise OptionError naming
    `param`, before either is written. `replace`: a folder flowtrace owns whole (the committed
    results) replaces whatever is there. `runtime`: see `figure_html`."""
    page, image = render(chart, scale, runtime)
    paths = figure_files(stem)
    owner = owner or f"the figure {Path(stem).name}"
    with claims(Path(stem).parent, param) as held:
        if replace:
            for path in paths:
                if path.is_file() and not held.mine(path, owner):
                    path.unlink()
        for path in paths:
            held.check(path, owner)
        for path, data in zip(paths, (page, image), strict=True):
            held.write(path, data, owner)
    return paths


# Another name for a store's figure where the user's own file holds the usual one.
OTHER_NAMES = 20


def save_store_figure(chart: alt.TopLevelMixin, store: Path, scale: float = 2) -> list[Path]:
    """Write a store's figure beside it (`figure_stem`), for that store alone: where a file
    flowtrace did not write for this store holds the name (the user's `mine.html` beside
    `mine.zarr`, another store's figure), it is left as it was and the figure goes to
    `NAME.figure.html` (then `NAME.figure-2.html`, …), with an OutputWarning saying so."""
    store = Path(store)
    page, image = render(chart, scale)
    base = figure_stem(store)
    stems = [base, *(base.with_name(f"{base.name}.figure{'' if i == 1 else f'-{i}'}")
                     for i in range(1, OTHER_NAMES + 1))]  # fmt: skip
    owner = f"the store {store.name}"
    with claims(store.parent) as held:
        stem = next((s for s in stems if all(held.mine(p, owner) for p in figure_files(s))), None)
        if stem is None:
            raise OptionError(
                "out",
                f"{base}.html: {OTHER_NAMES + 1} names for the figure of {store} are taken by "
                "files flowtrace did not write for it; move them away, or draw the figure "
                "elsewhere (`flowtrace plot STORE` with out=FIGURE)",
            )
        paths = figure_files(stem)
        for path, data in zip(paths, (page, image), strict=True):
            held.write(path, data, owner)
    if stem != base:
        taken = next(p for p in figure_files(base) if not held.mine(p, owner))
        warnings.warn(
            f"{taken} was not written by flowtrace for {store.name}: it is left as it was, "
            f"and the figure is {paths[0]} (and .png)",
            OutputWarning,
            stacklevel=2,
        )
    return paths
