"""A pass of knockout sweeps (recipes/paper.py) draws, beside its stores, one combined figure
with a panel per sweep; each panel's bands take its own lines' colours."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import vl_convert
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.plots.stores import COMBINED, combined_stem, pass_figure
from flowtrace.recipe import RECIPES_DIR
from flowtrace.store import open_cube

RESULTS = Path(__file__).resolve().parents[1] / "results"
PAPER = ["cross_frame", "vql_to_ql", "question_options_to_last", "vq_to_true_option"]


def _spec_rows(html: str) -> list[dict]:
    """The rows of data a figure's page carries (its spec, unescaped by the JSON parser)."""
    import json

    text = re.search(r'<script type="application/json" id="ft-spec">(.*?)</script>', html).group(1)
    spec = json.loads(text)
    return [row for values in spec["datasets"].values() for row in values]


def test_a_paper_pass_writes_the_combined_figure_beside_its_stores(tmp_path):
    out = tmp_path / "pass"
    args = ["run", str(RECIPES_DIR / "paper.py"), "--limit", "2", "--sample-mode", "all"]
    done = CliRunner().invoke(app, [*args, "--out", str(out)], env={"COLUMNS": "300"})
    assert done.exit_code == 0, done.output
    page, png = out / f"{COMBINED}.html", out / f"{COMBINED}.png"
    assert f"combined figure: {page}" in done.output and f"combined figure: {png}" in done.output
    assert png.stat().st_size > 10_000
    rows = _spec_rows(page.read_text())
    assert {row["run"] for row in rows} == set(PAPER)  # one panel per sweep
    # Each panel's curve is its store's mean over the analysed samples, per layer and edge.
    for name in PAPER:
        ds = open_cube(out / f"{name}.zarr")
        ok = ds["status"].values == "ok"
        change = ds["rel_change_pred"].transpose("sample", "layer", "source", "target").values[ok]
        for row in (r for r in rows if r["run"] == name):
            source, target = row["condition"].split(" -/-> ")
            s = list(map(str, ds["source"].values)).index(source)
            t = list(map(str, ds["target"].values)).index(target)
            want = np.nanmean(change[:, row["layer"], s, t])
            assert np.isclose(row["mean"], want, atol=1e-4), (name, row)


def test_one_recipe_or_a_pass_without_sweeps_draws_no_combined_figure(tmp_path):
    out = tmp_path / "one.zarr"
    args = ["run", "cross_frame", "--limit", "1", "--sample-mode", "all", "--out", str(out)]
    done = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert done.exit_code == 0, done.output
    assert "combined figure" not in done.output
    assert not list(tmp_path.glob(f"{COMBINED}*"))


def test_where_the_combined_figure_goes():
    # A pass with --out DIR: its stores share DIR.
    assert combined_stem([Path("d/a.zarr"), Path("d/b.zarr")]) == Path("d/combined")
    # Default outs: results/RECIPE/RUN.zarr, a folder per recipe: the folder above, by the run.
    stores = [Path("results/a/toy__toy__20260101-000000.zarr"), Path("results/b/toy__toy__1.zarr")]
    assert combined_stem(stores) == Path("results/combined__toy__toy__20260101-000000")


def _colours(svg: str, mark: str, attribute: str) -> dict[str, str]:
    """Per blocked edge, the colour (`fill` or `stroke`) of its `mark` paths in the drawn SVG."""
    out = {}
    for group in re.finditer(rf'<g class="mark-{mark} role-mark[^"]*"[^>]*>(.*?)</g>', svg):
        for path in re.finditer(r"<path [^>]*>", group.group(1)):
            tag = html.unescape(path.group(0))  # an edge's "->" is "-&gt;" in the SVG
            edge = re.search(r"condition: ([^;\"]*)", tag)
            colour = re.search(rf' {attribute}="(#[0-9a-f]+)"', tag)
            if edge and colour:
                out[edge.group(1)] = colour.group(1)
    return out


def test_each_panels_bands_take_its_lines_colours(tmp_path):
    stores = [RESULTS / "toy" / f"{name}.zarr" for name in PAPER[:2]]
    cubes = {name: open_cube(path) for name, path in zip(PAPER, stores, strict=False)}
    page, png = pass_figure(cubes, [tmp_path / s.name for s in stores])
    assert page == tmp_path / "combined.html" and png.exists()
    from flowtrace.plots import combined_chart

    svg = vl_convert.vegalite_to_svg(combined_chart(cubes).to_dict())
    bands, lines = _colours(svg, "area", "fill"), _colours(svg, "line", "stroke")
    # cross_frame's one edge and vql_to_ql's four.
    assert len(lines) == 5 and bands == lines
