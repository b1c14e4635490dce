"""A report site for a full benchmark: a gallery, one page per store, side-by-side pages.

Each page loads the shared runtime (`assets/vega.js`) and its own data file with classic
scripts, so the folder opens from disk (file://) as well as from any static host.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from flowtrace.errors import OptionError
from flowtrace.outputs import Claims, claims
from flowtrace.paths import store_stem
from flowtrace.plots import compare_chart
from flowtrace.report.page import (
    GLUE,
    SITE_PAGE_BUDGET,
    SITE_SAMPLES,
    Entry,
    collect_stores,
    headline,
    html_page,
    page_data,
    script_json,
    side_by_side,
    store_parts,
)
from flowtrace.store import analysed_mask, keys

SITE = "flowtrace site"  # what a site's files are written for (flowtrace.outputs' record)


def _page(held: Claims, name: str, title: str, body: str, data: dict, depth: int, budget: int):
    """Write `name`.html and its data file `name`.data.js under the site's folder."""
    up = "../" * depth
    script = "window.FT_DATA = " + script_json(data) + ";\n"
    size = len(script.encode("utf-8"))
    if size > budget:
        raise OptionError(
            "samples",
            f"the site page {name}.html's data would be {size / 2**20:.1f} MB, over its "
            f"{budget / 2**20:.0f} MB budget; show fewer samples per store (samples=…)",
        )
    target, data_file = _files(held.folder, name)
    held.write(data_file, script, SITE)
    tail = (
        f'<script src="{up}assets/vega.js"></script>'
        f'<script src="{_href(data_file.name)}"></script><script>{GLUE}</script>'
    )
    nav = f'<p><a href="{up}index.html">← gallery</a></p>'
    held.write(target, html_page(title, nav + body, tail), SITE)
    return target


def _files(out: Path, name: str) -> tuple[Path, Path]:
    return out / f"{name}.html", out / f"{name}.data.js"


def _href(relative: str) -> str:
    """A relative link to a file of the site, as an attribute value (a store named `my run#2`
    or `"x"` links to its own page)."""
    return html.escape(quote(relative))


def compare_name(recipe: str) -> str:
    """The side-by-side page of a recipe: `compare/NAME` with NAME safe as one file name (a
    recipe named `../x` stays in the site)."""
    return "compare/" + (re.sub(r"[^A-Za-z0-9_.-]", "_", recipe).lstrip(".") or "recipe")


def write_site(
    stores: Sequence[Path],
    out: Path,
    title: str = "flowtrace report",
    samples: int | None = SITE_SAMPLES,
    budget: int = SITE_PAGE_BUDGET,
) -> Path:
    """Write the site into folder `out`; returns its index.html. Every file is written whole;
    files the folder holds that flowtrace did not write for a site stop it before any is
    written (flowtrace.outputs)."""
    import vl_convert

    entries = collect_stores(stores)
    out = Path(out)
    by_recipe: dict[str, list[Entry]] = {}
    for entry in entries:
        recipe = str(entry.ds.attrs.get(keys.RECIPE, store_stem(entry.path)))
        by_recipe.setdefault(recipe, []).append(entry)
    compared = {r: compare_name(r) for r, group in by_recipe.items() if len(group) > 1}
    names = [e.label for e in entries] + list(compared.values())
    with claims(out, "site") as held:
        planned = [out / "index.html", out / "assets" / "vega.js"]
        planned += [f for name in names for f in _files(out, name)]
        for path in planned:  # refuse before writing anything
            held.check(path, SITE)
        held.write(
            out / "assets" / "vega.js",
            vl_convert.javascript_bundle("window.vegaEmbed = vegaEmbed;"),
            SITE,
        )
        parts = {}
        for entry in entries:
            section, specs, embeds, videos = parts[entry.key] = store_parts(entry, samples)
            depth = entry.label.count("/")
            _page(held, entry.label, f"{entry.label} · {title}", section,
                  page_data(specs, embeds, videos), depth, budget)  # fmt: skip
        for recipe, name in compared.items():
            group = by_recipe[recipe]
            specs, videos = {}, {}
            for entry in group:
                _, more_specs, _, more_videos = parts[entry.key]
                specs.update(more_specs)
                videos.update(more_videos)
            body, embeds = side_by_side(group, specs), []
            if all(_plain_knockout(e) for e in group):
                # Knockout curves of every store in one figure, above the two columns.
                specs["overlay"] = compare_chart({e.label: e.ds for e in group}).to_dict()
                embeds.append(("overlay", "overlay"))
                body = '<div id="overlay" class="figure"></div>' + body
            _page(held, name, f"{recipe} side by side · {title}", body,
                  page_data(specs, embeds, videos), 1, budget)  # fmt: skip
        held.write(out / "index.html", gallery(entries, by_recipe, compared, title), SITE)
    return out / "index.html"


def _plain_knockout(entry: Entry) -> bool:
    ds = entry.ds
    return (
        ds.attrs.get(keys.RECIPE_KIND, "Knockout") == "Knockout"
        and not int(ds.attrs.get(keys.EVAL_ONLY, 0))
        and "head" not in ds.dims
        and bool(analysed_mask(ds).any())
    )


def gallery(
    entries: Sequence[Entry], by_recipe: dict[str, list[Entry]], compared: dict, title: str
) -> str:
    """The index: one row per recipe, one column per folder of stores (a model)."""
    groups = list(
        dict.fromkeys(e.label.rsplit("/", 1)[0] if "/" in e.label else "" for e in entries)
    )
    models = {
        g: next(
            (str(e.ds.attrs.get(keys.MODEL)) for e in entries if e.label.startswith(g + "/")), ""
        )
        for g in groups
    }
    head = "".join(
        f"<th>{html.escape(g or '.')}<br><span class='muted'>{html.escape(models[g])}</span></th>"
        for g in groups
    )
    rows = []
    for recipe, group in by_recipe.items():
        cells = []
        for g in groups:
            found = [e for e in group if (e.label.rsplit("/", 1)[0] if "/" in e.label else "") == g]
            cells.append(
                "<td>"
                + "<br>".join(
                    f'<a href="{_href(e.label + ".html")}">{html.escape(store_stem(e.path))}</a>'
                    f"<br><span class='muted'>{html.escape(headline(e.ds))}</span>"
                    for e in found
                )
                + "</td>"
            )
        side = (
            f'<a href="{_href(compared[recipe] + ".html")}">side by side</a>'
            if recipe in compared
            else ""
        )
        rows.append(f"<tr><th>{html.escape(recipe)}</th>{''.join(cells)}<td>{side}</td></tr>")
    table = f"<table class='gallery'><tr><th>recipe</th>{head}<th></th></tr>{''.join(rows)}</table>"
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        ".muted{color:#666;font-size:85%}td,th{padding:.4em 1em;text-align:left;"
        "vertical-align:top;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{len(entries)} stores. Each page: provenance, the "
        f"figure, a sample browser.</p>{table}</body></html>\n"
    )
