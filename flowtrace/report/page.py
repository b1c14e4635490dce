"""The single-file report: sections per store, side by side, and the script that draws them."""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import xarray as xr

from flowtrace.errors import OptionError
from flowtrace.outputs import claims, is_a_folder
from flowtrace.paths import store_stem
from flowtrace.plots import FigureTooLarge, chart_for
from flowtrace.plots.common import check_rows, script_json
from flowtrace.reading.summary import clean_accuracy, counted, describe
from flowtrace.report.browser import FRAMES, sample_browser
from flowtrace.report.frames import thumbnails
from flowtrace.store import analysed_mask, keys, open_cube

PAGE_BUDGET = 5 * 2**20  # a single-file report (runtime included)
SITE_PAGE_BUDGET = 5 * 2**20  # one page's data file in a site (the runtime is shared)
SINGLE_SAMPLES = 64  # samples per store in a single file's browser
SITE_SAMPLES = 200  # samples per store in a site's browser (the figures use every sample)
THUMB = 64  # thumbnail side, px
REPORT = "flowtrace report"  # what a report page is written for (flowtrace.outputs' record)

# Draws every figure; the same code runs in a single file (bundled with the runtime) and in a
# site page (after the shared runtime and the page's data file).
GLUE = """
const FT = window.FT_DATA || JSON.parse(document.getElementById("ft-data").textContent);
window.ftViews = {};
const withFrames = (spec) => {
  const copy = JSON.parse(JSON.stringify(spec));
  copy.datasets = Object.assign(copy.datasets || {}, {FRAMES_NAME: FT.frames});
  return copy;
};
// By id, not a "#" selector: a store named threshold_0.25 or "my runs" is no valid selector.
const show = (target, key) =>
  vegaEmbed(document.getElementById(target), withFrames(FT.specs[key]),
            {renderer: "svg", actions: false})
    .then((result) => { window.ftViews[target] = result.view; });
const pending = FT.embeds.map(([target, key]) => show(target, key));
for (const select of document.querySelectorAll("select.ft-side")) {
  const draw = () => show(select.dataset.target, select.value);
  select.addEventListener("change", draw);
  pending.push(draw());
}
Promise.all(pending).then(
  () => { document.body.dataset.drawn = String(pending.length); },
  (error) => { console.error(error); document.body.dataset.drawn = "error"; },
);
""".replace("FRAMES_NAME", json.dumps(FRAMES))

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1500px}section{margin-bottom:3em}"
    "pre{font-size:12px;background:#f6f6f6;padding:1em}.pair{display:flex;gap:2em;"
    "flex-wrap:wrap}.pair>div{flex:1;min-width:480px}"
    # Side-by-side columns scale their figures to the column (the SVG keeps its viewBox).
    ".pair svg{max-width:100%;height:auto}"
    ".muted{color:#666;font-size:90%}table.gallery td,table.gallery th{padding:.3em 1em;"
    "text-align:left;border-bottom:1px solid #ddd}"
)


@dataclass
class Entry:
    """One store on a page: its label (group/name), path and cube; `key` names its elements
    in the page (unique, letters, digits, `_` and `-` only)."""

    label: str
    path: Path
    ds: xr.Dataset = field(repr=False)
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or page_key(self.label)


def page_key(label: str) -> str:
    """`label` as an element id: `/` as `__`, every character but letters, digits, `_` and `-`
    as `-HEX-` (a dot, a space or a quote would break a selector or the page)."""
    return re.sub(r"[^A-Za-z0-9_-]", lambda m: f"-{ord(m[0]):x}-", label.replace("/", "__"))


def collect_stores(paths: Sequence[Path]) -> list[Entry]:
    """Stores named directly, and every store under a folder that is not one (recursively)."""
    entries = []
    for path in map(Path, paths):
        if _is_store(path):
            # The folder's own name, also for a relative path (`x.zarr`, `../x.zarr`).
            group = path.absolute().parent.name or "."
            entries.append(Entry(f"{group}/{store_stem(path)}", path, open_cube(path)))
            continue
        if not path.is_dir():
            raise OptionError("stores", f"{path} is neither a store nor a folder of stores")
        found = [p for p in sorted(path.rglob("*.zarr")) if not _inside_store(p, path)]
        if not found:
            raise OptionError("stores", f"no store (*.zarr) under {path}")
        for store in found:
            relative = store.relative_to(path)
            label = (relative.parent / store_stem(relative)).as_posix()
            entries.append(Entry(label, store, open_cube(store)))
    return _unique_keys(entries)


def _unique_keys(entries: list[Entry]) -> list[Entry]:
    """Two labels may map to one key (`a b` and `a-20-b`): later ones get `-2`, `-3`, …"""
    seen: set[str] = set()
    for entry in entries:
        key, n = entry.key, 1
        while key in seen:
            n += 1
            key = f"{entry.key}-{n}"
        entry.key = key
        seen.add(key)
    return entries


def _is_store(path: Path) -> bool:
    return path.suffix == ".zarr" or (path / "zarr.json").exists()


def _inside_store(path: Path, root: Path) -> bool:
    return any(parent.suffix == ".zarr" for parent in path.relative_to(root).parents)


def headline(ds: xr.Dataset) -> str:
    """Counts and clean accuracy, for the gallery and the section headers."""
    status = [str(s) for s in ds["status"].values]
    parts = [f"{status.count('ok')} analysed", f"{status.count('skipped')} skipped"]
    if status.count("failed"):
        parts.append(f"{status.count('failed')} failed")
    if counted(ds).sizes["sample"]:
        parts.append(f"clean accuracy {clean_accuracy(ds):.1f}%")
    return " · ".join(parts)


def store_parts(entry: Entry, samples: int | None) -> tuple[str, dict, list, dict[str, int]]:
    """A store's section (HTML), its specs by key, its embeds (target, key), and the frames
    its browser shows per video."""
    ds, key = entry.ds, entry.key
    specs, embeds, videos = {}, [], {}
    name = html.escape(entry.path.name)
    parts = [
        f'<section id="{key}"><h2>{name}</h2>',
        f'<p class="muted">{html.escape(entry.label)} · {html.escape(headline(ds))}</p>',
        "<details><summary>provenance and counts</summary><pre>"
        f"{html.escape(chr(10).join(describe(ds)))}</pre></details>",
    ]
    figure, too_large = None, ""
    if analysed_mask(ds).any():
        try:
            figure = chart_for(ds)
            check_rows(figure)
        except FigureTooLarge as err:
            too_large = str(err)
    if figure is not None and not too_large:
        specs[f"{key}-figure"] = figure.to_dict(validate=False)
        embeds.append((f"figure-{key}", f"{key}-figure"))
        parts.append(f'<div id="figure-{key}" class="figure"></div>')
    elif too_large:
        parts.append(f"<p>No figure: {html.escape(too_large)}.</p>")
    else:
        parts.append("<p>No analysed samples in this store (see the counts above): no figure.</p>")
    if counted(ds).sizes["sample"]:
        browser, videos = sample_browser(ds, samples)
        # The browser's rows are per sample (its budget is the page's, checked below).
        with alt.data_transformers.disable_max_rows():
            specs[f"{key}-browser"] = browser.to_dict(validate=False)
        embeds.append((f"browser-{key}", f"{key}-browser"))
        parts.append(f'<h3>samples</h3><div id="browser-{key}" class="browser"></div>')
    parts.append("</section>")
    return "\n".join(parts), specs, embeds, videos


def contents(entries: Sequence[Entry]) -> str:
    """Links to every store's section, with its headline."""
    items = "".join(
        f'<li><a href="#{e.key}">{html.escape(e.label)}</a> '
        f'<span class="muted">{html.escape(headline(e.ds))}</span></li>'
        for e in entries
    )
    return f"<nav><ul>{items}</ul></nav>\n"


def side_by_side(entries: Sequence[Entry], specs: dict) -> str:
    """Two columns, each with a picker over every figure and browser of the page."""
    if len(entries) < 2 or not specs:
        return ""
    labels = {e.key: e.label for e in entries}
    options = []
    for k in specs:
        key, what = k.rsplit("-", 1)  # KEY-figure, KEY-browser
        options.append((k, labels.get(key, key), what))
    first, second = default_pair(entries)
    columns = []
    for side, entry in (("a", first), ("b", second)):
        wanted = f"{entry.key}-figure" if f"{entry.key}-figure" in specs else next(iter(specs))
        choices = "".join(
            f'<option value="{html.escape(k)}"{" selected" if k == wanted else ""}>'
            f"{html.escape(label)} · {html.escape(what)}</option>"
            for k, label, what in options
        )
        columns.append(
            f'<div><select class="ft-side" data-target="side-{side}">{choices}</select>'
            f'<div id="side-{side}"></div></div>'
        )
    return (
        '<section id="side-by-side"><h2>Side by side</h2><p class="muted">Pick any figure or '
        "sample browser of this page for each column (two models, or knockout beside "
        f'patching).</p><div class="pair">{"".join(columns)}</div></section>'
    )


def default_pair(entries: Sequence[Entry]) -> tuple[Entry, Entry]:
    """The first two stores of one recipe from different folders (two models), else the first
    two stores."""
    # A knockout pair reads best side by side; any recipe shared by two folders will do.
    knockout_first = sorted(entries, key=lambda e: e.ds.attrs.get(keys.RECIPE_KIND) != "Knockout")
    for i, a in enumerate(knockout_first):
        for b in knockout_first[i + 1 :]:
            same = a.ds.attrs.get(keys.RECIPE) == b.ds.attrs.get(keys.RECIPE)
            if same and a.path.parent != b.path.parent and analysed_mask(a.ds).any():
                return a, b
    return entries[0], entries[1]


def page_data(specs: dict, embeds: list, videos: dict[str, int]) -> dict:
    """What a page's script reads: specs, where to draw them, and the thumbnails (a video
    that cannot be read shows no frames; its samples still show their data)."""
    frames, _missing = thumbnails(videos, THUMB)
    return {"specs": specs, "embeds": embeds, "frames": frames}


def html_page(title: str, body: str, tail: str) -> str:
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>\n{body}\n{tail}</body></html>\n"
    )


def write_report(
    stores: Sequence[Path],
    out: Path,
    title: str = "flowtrace report",
    samples: int | None = SINGLE_SAMPLES,
    budget: int = PAGE_BUDGET,
) -> Path:
    """Write `out` (HTML, self-contained): per store its provenance, counts, interactive
    figure and sample browser (at most `samples` samples), then two stores side by side.
    Refuses a page over `budget` bytes, naming the fix."""
    import vl_convert

    out = Path(out)
    check_out(out)
    entries = collect_stores(stores)
    sections, specs, embeds, videos = [], {}, [], {}
    for entry in entries:
        section, more_specs, more_embeds, more_videos = store_parts(entry, samples)
        sections.append(section)
        specs.update(more_specs)
        embeds += more_embeds
        videos.update(more_videos)
    body = contents(entries) + side_by_side(entries, specs) + "\n" + "\n".join(sections)
    data = script_json(page_data(specs, embeds, videos))
    tail = (
        f'<script type="application/json" id="ft-data">{data}</script>\n'
        f'<script type="module">{vl_convert.javascript_bundle(GLUE)}</script>'
    )
    page = html_page(title, body, tail)
    size = len(page.encode("utf-8"))
    if size > budget:
        raise OptionError(
            "samples",
            f"the report page would be {size / 2**20:.1f} MB, over its {budget / 2**20:.0f} MB "
            "budget; show fewer samples per store (samples=…) or write a site (write_site, "
            "site=DIR)",
        )
    with claims(out.parent) as held:
        held.write(out, page, REPORT)
    return out


def check_out(out: Path) -> None:
    """Refuse, before any work, an `out` that is a folder or a file flowtrace did not write as
    a report page (flowtrace.outputs)."""
    out = Path(out)
    if out.is_dir():
        raise is_a_folder(out, "out")
    if os.path.lexists(out):
        with claims(out.parent) as held:
            held.check(out, REPORT)
