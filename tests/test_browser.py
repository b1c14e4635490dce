"""The report in a real browser: headless Chromium (Debian's) driven by Playwright over a report
of the shipped results. Skips only when no Chromium can be started, and says why.

FLOWTRACE_SCREENSHOT=docs/report.png writes the screenshot the README shows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flowtrace.report import PAGE_BUDGET, SITE_PAGE_BUDGET, write_report, write_site

RESULTS = Path(__file__).resolve().parents[1] / "results"
SHIPPED = [*sorted((RESULTS / "toy").glob("*.zarr")), *sorted((RESULTS / "planted").glob("*.zarr"))]
# The flags a root, offline, display-less machine needs (no sandbox; no background calls home).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MARKS = "svg g[class*='mark-'] > *"  # drawn marks (paths, rects, images, text)

pytestmark = pytest.mark.slow


def _chromium() -> str | None:
    for name in (os.environ.get("FLOWTRACE_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (found := shutil.which(name) or (Path(name).exists() and name)):
            return str(found)
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no browser driver: `pip install playwright` (in the dev extra)")
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium: install Debian's `chromium` package (.ci/run does)")
    with sync_playwright() as driver:
        try:
            chromium = driver.chromium.launch(executable_path=executable, args=FLAGS)
        except Exception as err:  # noqa: BLE001 - any launch failure means no browser here
            pytest.skip(f"Chromium at {executable} does not start: {err}")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    return write_report(SHIPPED, out, title="shipped results")


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(url)
    page.wait_for_function("document.body.dataset.drawn !== undefined", timeout=120_000)
    return page, errors


@pytest.fixture(scope="module")
def opened(browser, report):
    page, errors = _open(browser, report.as_uri())
    yield page, errors
    page.close()


def _drawn(page, target: str) -> int:
    """Marks drawn in `target`'s figure; 0 when its SVG has no finite size."""
    return page.evaluate(
        """(target) => {
          const svg = document.querySelector('#' + target + ' svg');
          if (!svg) return 0;
          const [, , w, h] = (svg.getAttribute('viewBox') || '').split(' ').map(Number);
          if (!(w > 0 && h > 0 && w < 1e5 && h < 1e5)) return 0;
          return svg.querySelectorAll("g[class*='mark-'] > *").length;
        }""",
        target,
    )


def test_page_is_small_offline_and_draws_every_figure_without_errors(opened, report):
    page, errors = opened
    assert report.stat().st_size <= PAGE_BUDGET
    assert page.evaluate("document.body.dataset.drawn") != "error"
    assert errors == []
    targets = page.evaluate(
        "[...document.querySelectorAll('div.figure, div.browser, div[id^=side-]')].map(d => d.id)"
    )
    # Every store with analysed samples: its figure and its browser, plus the two columns.
    assert len(targets) == 2 * len(SHIPPED) + 2
    empty = [t for t in targets if _drawn(page, t) < 10]
    assert empty == []
    # Each browser shows its sample's frames as decoded thumbnails, not broken images.
    hrefs = page.evaluate(
        "[...document.querySelectorAll('div.browser svg image')].map(i => i.getAttribute('href'))"
    )
    assert len(hrefs) == 8 * len(SHIPPED)  # the chosen sample's 8 frames in each browser
    assert all(h.startswith("data:image/") for h in hrefs)


def _heat_fills(page, target: str) -> list[str]:
    return page.evaluate(
        """(target) => Array.from(
             document.querySelector('#' + target + ' g.mark-rect').querySelectorAll('path'),
             (p) => p.getAttribute('fill'))""",
        target,
    )


def _curve(page, target: str) -> str:
    return page.evaluate(
        "(t) => [...document.querySelectorAll('#' + t + ' g.mark-line path')]"
        ".map(p => p.getAttribute('d')).join('|')",
        target,
    )


def test_flow_map_slider_changes_the_heatmap(opened):
    page, _ = opened
    target = "figure-toy__flow_map"
    slider = page.locator(f"#{target} input[type=range]")
    start = int(slider.input_value())
    before = _heat_fills(page, target)
    moved = (start + 3) % 8
    slider.fill(str(moved))
    page.wait_for_function(
        "([t, v]) => window.ftViews[t].signal('at_layer') == v", arg=[target, moved]
    )
    page.wait_for_timeout(200)
    after = _heat_fills(page, target)
    assert len(after) == len(before) > 100  # one cell per edge at that layer
    assert after != before


def test_click_on_a_cell_changes_the_layer_curve(opened):
    page, _ = opened
    target = "figure-toy__flow_map"
    before = _curve(page, target)
    assert before
    cells = page.locator(f"#{target} g.mark-rect").first.locator("path")
    # Cells whose curve matches the open one (all-zero edges) leave it: try a few.
    for index in range(0, cells.count(), 7):
        cells.nth(index).click(force=True)
        page.wait_for_timeout(100)
        if _curve(page, target) != before:
            break
    assert _curve(page, target) != before


def test_sample_browser_shows_the_chosen_sample(opened):
    page, _ = opened
    target = "browser-toy__flow_map"
    images = f"#{target} svg image"
    frames_before = page.eval_on_selector_all(images, "els => els.map(e => e.getAttribute('href'))")
    text_before = page.text_content(f"#{target} svg")
    page.select_option(f"#{target} select", index=1)
    page.wait_for_function("(t) => window.ftViews[t].signal('sample') == 1", arg=target)
    page.wait_for_timeout(200)
    frames_after = page.eval_on_selector_all(images, "els => els.map(e => e.getAttribute('href'))")
    assert frames_after != frames_before and len(frames_after) == 8
    assert page.text_content(f"#{target} svg") != text_before  # question, answer, effects


def test_side_by_side_pickers_redraw_their_column(opened):
    page, errors = opened
    before = page.text_content("#side-b svg")
    options = page.eval_on_selector_all(
        "select.ft-side[data-target=side-b] option", "o => o.length"
    )
    assert options == 2 * len(SHIPPED)
    page.select_option("select.ft-side[data-target=side-b]", "planted__flow_map-figure")
    page.wait_for_function("() => document.querySelector('#side-b svg') !== null")
    page.wait_for_timeout(500)
    assert page.text_content("#side-b svg") != before and _drawn(page, "side-b") > 100
    assert errors == []


def test_screenshot_of_the_flow_map_and_its_browser(browser, report, tmp_path):
    page, _ = _open(browser, report.as_uri())  # as a reader first sees it: nothing clicked
    page.mouse.move(0, 0)
    section = page.locator("#toy__flow_map")
    section.scroll_into_view_if_needed()
    shot = tmp_path / "report.png"
    section.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000  # a picture, not a blank box
    if wanted := os.environ.get("FLOWTRACE_SCREENSHOT"):
        shutil.copy(shot, wanted)
    page.close()


def test_site_gallery_pages_and_side_by_side_open_from_disk(browser, tmp_path):
    index = write_site([RESULTS], tmp_path / "site", title="shipped results")
    page = browser.new_page()
    page.goto(index.as_uri())
    links = page.eval_on_selector_all("table a", "els => els.map(e => e.getAttribute('href'))")
    page.close()
    assert "toy/flow_map.html" in links and "planted/flow_map.html" in links
    assert "compare/flow_map.html" in links
    for data in (tmp_path / "site").rglob("*.data.js"):
        assert data.stat().st_size <= SITE_PAGE_BUDGET, data
    for link in ("toy/flow_map.html", "compare/cross_frame.html"):
        page, errors = _open(browser, (tmp_path / "site" / link).as_uri())
        assert page.evaluate("document.body.dataset.drawn") != "error"
        targets = page.evaluate("Object.keys(window.ftViews)")
        assert targets and all(_drawn(page, t) >= 10 for t in targets), link
        assert errors == [], link
        page.close()


HOSTILE = 'x"><img src=x onerror=window.__pwned=1>'


@pytest.fixture(scope="module")
def awkward(tiny_model_dir, tiny_data, tmp_path_factory) -> Path:
    """A folder whose name has a space and a dot, holding a store named to inject a handler
    (its questions and options carry handlers too) and a flow map named like a pathway's
    threshold store."""
    import json

    from flowtrace.recipe import load_recipe
    from flowtrace.runner import RunOptions, run

    base = tmp_path_factory.mktemp("awkward")
    data = base / "data"
    shutil.copytree(tiny_data, data)
    for file in (data / "json").glob("*.json"):
        entries = json.loads(file.read_text())
        for entry in entries:
            tag = '<b onmouseover="window.__pwned=3">{}</b>'
            entry["question"] = '<img src=x onerror="window.__pwned=2"> ' + entry["question"]
            entry["candidates"] = [tag.format(c) for c in entry["candidates"]]
            entry["answer"] = tag.format(entry["answer"])
        file.write_text(json.dumps(entries))
    root = base / "my runs.v2"
    options = RunOptions(
        model=str(tiny_model_dir),
        data=str(data),
        limit=2,
        sample_mode="all",
        plot=False,
        out=root / f"{HOSTILE}.zarr",
    )
    run(load_recipe("cross_frame"), options)
    shutil.copytree(RESULTS / "toy" / "flow_map.zarr", root / "threshold_0.25.zarr")
    return root


def _unharmed_and_drawn(page, errors: list[str]) -> None:
    assert page.evaluate("document.body.dataset.drawn") != "error", errors
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('img, b').length") == 0  # all text
    targets = page.evaluate("Object.keys(window.ftViews)")
    assert targets and all(_drawn(page, t) >= 10 for t in targets), targets
    assert errors == []


def test_awkward_and_hostile_names_draw_and_run_no_script(browser, awkward, tmp_path):
    """A dot or a space in a store's folder or name left the page blank (exit 0); a store name,
    question or option holding markup ran its handler. Every figure draws, nothing runs."""
    report = write_report([awkward], tmp_path / "r.html")
    page, errors = _open(browser, report.as_uri())
    _unharmed_and_drawn(page, errors)
    assert len(page.evaluate("Object.keys(window.ftViews)")) == 2 * 2 + 2  # + side by side
    text = page.evaluate("document.body.innerText")
    assert f"{HOSTILE}.zarr" in text  # shown as the name it is
    browser_id = next(t for t in page.evaluate("Object.keys(window.ftViews)") if "browser-x" in t)
    shown = page.text_content(f"#{browser_id} svg")
    assert 'onerror="window.__pwned=2"' in shown  # the question, as text
    page.close()
    index = write_site([awkward.parent], tmp_path / "site")  # pages under "my runs.v2/"
    for link in ("my runs.v2/threshold_0.25.html", f"my runs.v2/{HOSTILE}.html"):
        page, errors = _open(browser, (index.parent / link).as_uri())
        _unharmed_and_drawn(page, errors)
        page.close()
    page = browser.new_page()
    page.goto(index.as_uri())
    assert page.evaluate("window.__pwned") is None
    page.close()
