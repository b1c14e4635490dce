"""One self-contained HTML page with every figure of several stores (`flowtrace report`).

The page carries the Vega-Lite runtime (bundled by vl-convert) and each figure's data, so it opens
offline and can be mailed or archived as one file; the figures stay interactive.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import vl_convert

from flowtrace.plots import chart_for
from flowtrace.store import open_cube
from flowtrace.summary import describe


def write_report(stores: Sequence[Path], out: Path, title: str = "flowtrace report") -> Path:
    """Write `out` (HTML): per store its provenance and counts, then its interactive figure."""
    sections, embeds = [], []
    for index, store in enumerate(stores):
        ds = open_cube(store)
        target = f"figure-{index}"
        if (ds["status"] == "ok").any():
            figure = f'<div id="{target}"></div>'
            spec = chart_for(ds).to_dict()
            embeds.append(f"vegaEmbed({json.dumps('#' + target)}, {json.dumps(spec)});")
        else:
            figure = "<p>No analysed samples in this store (see the counts above): no figure.</p>"
        sections.append(
            f"<section><h2>{html.escape(Path(store).name)}</h2>\n"
            f"<details><summary>provenance and counts</summary><pre>"
            f"{html.escape(chr(10).join(describe(ds)))}</pre></details>\n{figure}</section>"
        )
    script = vl_convert.javascript_bundle("\n".join(embeds))
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}section{margin-bottom:3em}"
        "pre{font-size:12px;background:#f6f6f6;padding:1em}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>\n"
        + "\n".join(sections)
        + f'\n<script type="module">{script}</script></body></html>\n'
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
