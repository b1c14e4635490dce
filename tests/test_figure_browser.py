"""A figure's HTML draws offline: opened from disk in headless Chromium with the network off, it
draws its marks, asks nothing of the network, and a title holding `</script>` stays text.
Skips only when no Chromium can be started (the `browser` fixture of test_browser)."""

from __future__ import annotations

import re
from pathlib import Path

import altair as alt
import pandas as pd
import pytest
from test_browser import MARKS, browser  # noqa: F401 - the fixture, used by name

from flowtrace.plots import chart_for, save_chart
from flowtrace.store import open_cube

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _open_offline(browser, page_file: Path) -> tuple[int, list[str], list[str]]:  # noqa: F811
    """(marks drawn, errors, requests that left the machine) for `page_file` opened with the
    network off."""
    context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
    asked: list[str] = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            request_route.continue_()
        else:
            asked.append(url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(page_file.as_uri())
    page.wait_for_function("document.body.dataset.drawn !== undefined", timeout=120_000)
    if page.evaluate("document.body.dataset.drawn") == "error":
        errors.append(page.inner_text("body"))
    marks = page.evaluate(f'document.querySelectorAll("#ft-figure {MARKS}").length')
    context.close()
    return marks, errors, asked


@pytest.mark.parametrize("store", ["toy/cross_frame.zarr", "toy/flow_map.zarr"])
def test_a_store_figure_draws_its_marks_with_the_network_off(browser, tmp_path, store):  # noqa: F811
    ds = open_cube(RESULTS / store)
    html, _png = save_chart(chart_for(ds), tmp_path / "figure")
    assert re.search(r"<script[^>]*\ssrc=", html.read_text()) is None  # nothing loaded
    marks, errors, asked = _open_offline(browser, html)
    assert errors == [] and asked == []
    # The cross-frame figure: a line, a band and points per layer and edge; the flow map: a
    # heatmap of every (source, target) cell. Either way many more than a handful.
    assert marks > 50


def test_a_title_holding_a_script_end_tag_stays_text(browser, tmp_path):  # noqa: F811
    title = "</script><script>window.pwned = 1</script>"
    table = pd.DataFrame({"layer": [0, 1, 2], "value": [1.0, 3.0, 2.0]})
    chart = alt.Chart(table, title=title).mark_line().encode(x="layer:Q", y="value:Q")
    html, _png = save_chart(chart, tmp_path / "hostile")
    marks, errors, asked = _open_offline(browser, html)
    assert errors == [] and asked == []
    assert marks >= 1  # the line
    context = browser.new_context(offline=True)
    page = context.new_page()
    page.goto(html.as_uri())
    page.wait_for_function("document.body.dataset.drawn !== undefined", timeout=120_000)
    assert page.evaluate("window.pwned") is None
    assert title in page.inner_text("#ft-figure")
    context.close()


@pytest.mark.parametrize("page", ["toy/cross_frame.html", "planted/auto_pathway/curve.html"])
def test_a_committed_figure_draws_from_the_shared_runtime_offline(browser, page):  # noqa: F811
    """The committed results' figures share one runtime (results/vega.js) instead of carrying
    0.9 MB each: opened from disk with the network off, each still draws its marks."""
    text = (RESULTS / page).read_text()
    assert len(text) < 300_000 and 'src="' in text
    marks, errors, asked = _open_offline(browser, RESULTS / page)
    assert errors == [] and asked == []
    assert marks > 10
