"""`flowtrace report`: the offline page, its sample browser's data, the site, the budgets.

The page drawn in a real browser is tests/test_browser.py."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.data import read_frames
from flowtrace.errors import OptionError
from flowtrace.plots import chart_for
from flowtrace.recipe import load_recipe
from flowtrace.report import collect_stores, write_report, write_site
from flowtrace.report.browser import frame_key, per_frame_effects, pick_samples, sample_browser
from flowtrace.report.frames import resolve_video
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube


def _page_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="ft-data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def stores(tiny_model_dir: Path, tiny_data: Path, tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("stores")
    common = dict(model=str(tiny_model_dir), data=str(tiny_data), limit=2, sample_mode="all")
    return [
        run(load_recipe(name), RunOptions(out=out / f"{name}.zarr", plot=False, **common)).store
        for name in ("cross_frame", "gen_prob")
    ]


def test_report_embeds_every_figure_and_browser_offline(stores, tmp_path):
    page = write_report(stores, tmp_path / "report.html", title="two runs").read_text()
    assert "<title>two runs</title>" in page
    assert re.search(r"<script[^>]*\bsrc=", page) is None  # nothing fetched: works offline
    data = _page_data(page)
    for store in stores:
        key = f"{store.parent.name}__{store.stem}"
        assert f"<h2>{store.name}</h2>" in page
        assert f'id="figure-{key}"' in page and f'id="browser-{key}"' in page
        assert [f"figure-{key}", f"{key}-figure"] in data["embeds"]
        # The figure in the page is the store's figure (chart_for), data included.
        expected = json.loads(json.dumps(chart_for(open_cube(store)).to_dict()))
        assert data["specs"][f"{key}-figure"]["datasets"] == expected["datasets"]
    assert "model: " in page and "samples: " in page  # provenance and counts
    assert 'class="ft-side"' in page  # two stores side by side


def test_thumbnails_are_the_frames_of_each_sample(stores, tmp_path):
    page = write_report(stores[:1], tmp_path / "r.html").read_text()
    frames = {row["key"]: row["url"] for row in _page_data(page)["frames"]}
    ds = open_cube(stores[0])
    count = int(ds.attrs["frames"])
    assert len(frames) == ds.sizes["sample"] * count
    for name in map(str, ds["video"].values):
        video = str(Path(ds.attrs["data_root"]) / name)  # a relative path is under data_root
        pixels = read_frames(Path(video), count)
        for t in range(count):
            uri = frames[frame_key(video, t)]
            image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
            assert max(image.size) <= 64
            shown = np.asarray(image.convert("RGB"), dtype=float).mean((0, 1))
            source = pixels[t].astype(float).mean((0, 1))
            assert np.abs(shown - source).max() < 8  # the same picture, shrunk


def _csv_rows(spec: dict) -> list[pd.DataFrame]:
    """Every inline CSV table of a spec."""
    tables = []
    for value in spec.get("datasets", {}).values():
        if isinstance(value, str):
            tables.append(pd.read_csv(io.StringIO(value), keep_default_na=False))
    return tables


def _flow_cube() -> xr.Dataset:
    """A flow-map cube by hand: 2 analysed samples and 1 skipped, frames 0-2, two targets;
    the effect of frame f on target g at layer l for sample s is -(100 s + 10 f + l + g/2)."""
    sources = ["system", "frame_0", "frame_1", "frame_2", "question"]
    targets = ["frame_1", "question", "last"]
    value = np.full((3, 2, len(sources), len(targets)), np.nan)
    for s in range(2):
        for layer in range(2):
            for f in range(3):
                for g, target in enumerate(targets):
                    if target != "frame_1":
                        value[s, layer, 1 + f, g] = -(100 * s + 10 * f + layer + g / 2)
    return xr.Dataset(
        {"rel_change_pred": (("sample", "layer", "source", "target"), value)},
        coords={
            "sample": ["A/0", "B/0", "A/1"],
            "layer": [0, 1],
            "source": sources,
            "target": targets,
            "status": ("sample", ["ok", "ok", "skipped"]),
            "task": ("sample", ["A", "B", "A"]),
            "video": ("sample", ["/nowhere/a.mp4", "/nowhere/b.mp4", "/nowhere/c.mp4"]),
            "question": ("sample", ["q?"] * 3),
            "candidates": ("sample", ['["x", "y"]'] * 3),
            "answer": ("sample", ["x", "y", "x"]),
            "answer_letter": ("sample", ["A", "B", "A"]),
            "clean_pred": ("sample", ["A", "B", "B"]),
            "clean_correct": ("sample", [True, True, False]),
        },
        attrs={"recipe_kind": "FlowMap", "frames": 3},
    )


def test_per_frame_effects_are_each_samples_own_cells():
    table, title, short = per_frame_effects(_flow_cube())
    assert "cut off" in title and short
    assert set(table["target"]) == {"question", "last"}  # targets after the video only
    for row in table.itertuples():
        g = {"question": 1, "last": 2}[row.target]
        assert row.value == -(100 * row.s + 10 * row.frame + row.layer + g / 2)
    assert len(table) == 2 * 2 * 3 * 2


def test_browser_lists_counted_samples_with_their_question_and_answer():
    chart, videos = sample_browser(_flow_cube())
    spec = chart.to_dict(validate=False)
    bind = spec["params"][0]["bind"]
    assert bind["labels"] == [
        "A/0 (ok, clean right)",
        "B/0 (ok, clean right)",
        "A/1 (skipped, clean wrong)",
    ]
    info = next(t for t in _csv_rows(spec) if "text" in t)
    lines = info[info["s"] == 2]["text"].tolist()
    assert "options: A. x   B. y" in lines and "answer: A. x" in lines
    assert any(line.startswith("clean answer: B (wrong") for line in lines)
    assert videos == {"/nowhere/a.mp4": 3, "/nowhere/b.mp4": 3, "/nowhere/c.mp4": 3}


def test_browser_of_an_unknown_kind_draws_its_curves_per_dim():
    ds = _flow_cube().rename(source="position", target="token")
    ds.attrs["recipe_kind"] = "Patching"
    spec = sample_browser(ds)[0].to_dict(validate=False)
    curves = next(t for t in _csv_rows(spec) if "series" in t)
    at = curves[(curves["s"] == 1) & (curves["series"] == "frame_2 · last")]
    assert at.set_index("x")["value"].to_dict() == {0: -(100 + 20 + 1), 1: -(100 + 20 + 2)}


def test_downsampling_keeps_every_task_and_analysed_samples_first():
    ds = _flow_cube()
    assert list(pick_samples(ds, None)["sample"].values) == ["A/0", "B/0", "A/1"]
    assert list(pick_samples(ds, 2)["sample"].values) == ["A/0", "B/0"]


def test_report_of_a_store_without_analysed_samples(tiny_model_dir, tiny_data, tmp_path):
    # The random tiny model answers wrong, so --sample-mode correct skips every sample.
    options = RunOptions(
        model=str(tiny_model_dir), data=str(tiny_data), limit=1, plot=False, out=tmp_path / "s"
    )
    store = run(load_recipe("cross_frame"), options).store
    assert not (open_cube(store)["status"] == "ok").any()
    page = write_report([store], tmp_path / "r.html").read_text()
    assert "No analysed samples" in page and 'id="figure-' not in page
    assert 'id="browser-' in page  # skipped samples still show their frames and answers


def test_over_budget_page_is_refused_with_the_fix(stores, tmp_path):
    with pytest.raises(OptionError, match=r"budget.*samples=.*site=DIR"):
        write_report(stores, tmp_path / "big.html", budget=100_000)
    assert not (tmp_path / "big.html").exists()


def test_folders_are_searched_for_stores_and_bad_paths_named(stores, tmp_path):
    entries = collect_stores([stores[0].parent])
    assert sorted(e.label for e in entries) == sorted(s.stem for s in stores)
    with pytest.raises(OptionError, match="neither a store nor a folder"):
        collect_stores([tmp_path / "missing.zarr.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError, match="no store"):
        collect_stores([tmp_path / "empty"])


def test_cli_site_writes_gallery_pages_and_shared_runtime(stores, tmp_path):
    result = CliRunner().invoke(app, ["report", str(stores[0].parent), "--site", str(tmp_path)])
    assert result.exit_code == 0, result.output
    index = (tmp_path / "index.html").read_text()
    for store in stores:
        assert f'href="{store.stem}.html"' in index
        page = (tmp_path / f"{store.stem}.html").read_text()
        assert 'src="assets/vega.js"' in page and f'src="{store.stem}.data.js"' in page
        data = (tmp_path / f"{store.stem}.data.js").read_text()
        assert data.startswith("window.FT_DATA = ")
    assert (tmp_path / "assets" / "vega.js").stat().st_size > 100_000
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "neither a store nor a folder" in bad.output


def test_site_compare_page_for_a_recipe_in_two_folders(stores, tmp_path):
    for folder in ("a", "b"):
        target = tmp_path / "in" / folder
        target.mkdir(parents=True)
        shutil.copytree(stores[0], target / stores[0].name)
    write_site([tmp_path / "in"], tmp_path / "site")
    page = (tmp_path / "site" / "compare" / "cross_frame.html").read_text()
    assert 'src="../assets/vega.js"' in page and 'id="overlay"' in page
    assert 'href="compare/cross_frame.html"' in (tmp_path / "site" / "index.html").read_text()


def test_moved_embedded_videos_are_found_in_this_checkout(tmp_path):
    moved = "/elsewhere/flowtrace/toy/embedded/heldout/video/event_order/event_order_0000.mp4"
    here = resolve_video(moved)
    assert here is not None and here.exists()
    assert resolve_video(str(tmp_path / "gone.mp4")) is None


HOSTILE = 'x"><img src=x onerror=window.__pwned=1>'
SHIPPED_FLOW_MAP = Path(__file__).resolve().parents[1] / "results" / "toy" / "flow_map.zarr"


def test_store_names_with_dots_spaces_and_markup_become_safe_ids_and_escaped_text(tmp_path):
    """Element ids are letters, digits, `_` and `-` (a dot or a space broke the selector the
    page draws with, leaving it blank); names are text, never markup."""
    stores = []
    for name in ("my runs/threshold_0.25.zarr", f"{HOSTILE}/{HOSTILE}.zarr", "a.b/exp.a.zarr"):
        stores.append(tmp_path / name)
        shutil.copytree(SHIPPED_FLOW_MAP, stores[-1])
    page = write_report(stores, tmp_path / "r.html").read_text()
    ids = re.findall(r'\bid="([^"]*)"', page)
    assert ids and all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    data = _page_data(page)
    assert {target for target, _ in data["embeds"]} <= set(ids)  # every figure has its element
    assert "<img" not in page.split('<script type="module">')[0].replace("&lt;img", "")
    assert f"<h2>{html.escape(HOSTILE)}.zarr</h2>" in page
    assert "<h2>threshold_0.25.zarr</h2>" in page
    # The side-by-side pickers name each store by its label, escaped.
    assert f"{html.escape(HOSTILE)}/{html.escape(HOSTILE)} · figure</option>" in page


def test_a_site_links_every_page_by_its_escaped_address_and_stays_in_its_folder(
    tmp_path, monkeypatch
):
    from urllib.parse import quote, unquote

    root = tmp_path / "in"
    for name in (f"{HOSTILE}/s.zarr", "my runs/threshold_0.25.zarr"):
        shutil.copytree(SHIPPED_FLOW_MAP, root / name)
    index = write_site([root], tmp_path / "site")
    text = index.read_text()
    hrefs = re.findall(r'href="([^"]*)"', text)
    assert quote(f"{HOSTILE}/s.html") in [html.unescape(h) for h in hrefs]
    for href in hrefs:
        page = tmp_path / "site" / unquote(html.unescape(href))
        assert page.is_file(), href
        if "compare/" not in href:
            data_js = re.search(r'<script src="([^"]*\.data\.js)"', page.read_text())[1]
            assert (page.parent / unquote(html.unescape(data_js))).is_file()
    assert "<img" not in text
    # A store named relative to the working folder lands in the site under that folder's name.
    monkeypatch.chdir(root / "my runs")
    write_site([Path("threshold_0.25.zarr")], tmp_path / "site2")
    assert (tmp_path / "site2" / "my runs" / "threshold_0.25.html").is_file()
    assert sorted(p.name for p in (tmp_path / "site2").iterdir()) == [
        ".flowtrace-outputs.json", "assets", "index.html", "my runs",
    ]  # fmt: skip


def test_a_recipes_side_by_side_page_name_stays_in_the_site():
    from flowtrace.report.site import compare_name

    assert compare_name("cross_frame") == "compare/cross_frame"
    assert compare_name("../../etc/x") == "compare/_.._etc_x"
    assert "/" not in compare_name("a/b").removeprefix("compare/")


def test_json_in_the_page_cannot_end_its_script_element():
    from flowtrace.report.page import script_json

    text = script_json({"q": "</script><!--<script>&", "n": 1})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"q": "</script><!--<script>&", "n": 1}


def test_a_failed_samples_video_is_named_under_the_data_root_and_home(tmp_path, monkeypatch):
    from flowtrace.reading.summary import describe

    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    ds = xr.Dataset(
        coords={
            "sample": ["a/0", "a/1"],
            "status": ("sample", ["failed", "failed"]),
            "reason": (
                "sample",
                [
                    f"video not found: {home}/data/video/a.mp4 — check the dataset folder",
                    f"{home}/other/model: could not load",
                ],
            ),  # fmt: skip
            "clean_correct": ("sample", [False, False]),
        },
        attrs={"data": str(home / "data"), "data_root": "~/data", "model": f"{home}/m"},
    )
    text = "\n".join(describe(ds))
    assert "video not found: ~/data/video/a.mp4" in text
    assert "~/other/model: could not load" in text and "model: ~/m" in text
    assert str(home) not in text
