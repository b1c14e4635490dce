"""`flowtrace report`: one offline HTML page holding every store's figure and provenance."""

from __future__ import annotations

import json
import re
from pathlib import Path

from flowtrace.plots import chart_for
from flowtrace.recipe import load_recipe
from flowtrace.report import write_report
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube


def test_report_embeds_every_figure_offline(tiny_model_dir: Path, tiny_data: Path, tmp_path):
    common = dict(model=str(tiny_model_dir), data=str(tiny_data), limit=1, sample_mode="all")
    common["plot"] = False
    stores = [
        run(load_recipe(name), RunOptions(out=tmp_path / f"{name}.zarr", **common)).store
        for name in ("cross_frame", "gen_prob")
    ]
    page = write_report(stores, tmp_path / "report.html", title="two runs").read_text()
    assert "<title>two runs</title>" in page
    assert re.search(r"<script[^>]*\bsrc=", page) is None  # nothing fetched: works offline
    for index, store in enumerate(stores):
        assert f"<h2>{store.name}</h2>" in page and f'id="figure-{index}"' in page
        # The figure's own spec sits in the page (the bundler rewrites its JSON as JS, so look
        # for its strings): the target element, the title, a value of its data.
        spec = chart_for(open_cube(store)).to_dict()
        assert f'"#figure-{index}"' in page and spec["title"]["text"] in page
        first_rows = next(iter(spec["datasets"].values()))
        assert json.dumps(next(v for v in first_rows[0].values() if isinstance(v, str))) in page
    assert "model: " in page and "samples: " in page  # provenance and counts


def test_report_of_a_store_without_analysed_samples(tiny_model_dir, tiny_data, tmp_path):
    # The random tiny model answers wrong, so --sample-mode correct skips every sample.
    options = RunOptions(
        model=str(tiny_model_dir), data=str(tiny_data), limit=1, plot=False, out=tmp_path / "s"
    )
    store = run(load_recipe("cross_frame"), options).store
    assert not (open_cube(store)["status"] == "ok").any()
    page = write_report([store], tmp_path / "r.html").read_text()
    assert "No analysed samples" in page and "figure-0" not in page
