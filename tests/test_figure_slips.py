"""Figures that say what they show: the flow map names the layer its picture is of, the
counterfactual-patching figure's title names its colour's measure, and the logit lens's bands
stay within [0, 1]. Checked on the drawn SVG or the chart's data against hand-computed values."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import vl_convert
import xarray as xr

from flowtrace.plots import chart_for
from flowtrace.plots.common import Z95
from flowtrace.store import open_cube

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _rows(chart) -> list[dict]:
    return [row for values in chart.to_dict()["datasets"].values() for row in values]


def test_the_flow_map_picture_names_the_layer_it_shows():
    ds = open_cube(RESULTS / "toy" / "flow_map.zarr")
    # The picture opens on the strongest cell: the layer of the largest |mean| change.
    change = ds["rel_change_pred"].transpose("sample", "layer", "source", "target").values
    ok = change[ds["status"].values == "ok"]
    with warnings.catch_warnings():  # cells no edge has (a target before its source) are NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(ok, axis=0)
    layer = int(ds["layer"].values[np.unravel_index(np.nanargmax(np.abs(mean)), mean.shape)[0]])
    svg = vl_convert.vegalite_to_svg(chart_for(ds).to_dict())
    assert f"relative change of p(answer) at layer {layer}<" in svg


def _patching_cube() -> xr.Dataset:
    """Three analysed samples, one counterfactual each; the third's counterfactual video equals
    its clean one. Flips at (layer 0, group video): samples 0 and 2; elsewhere none."""
    flipped = np.zeros((3, 1, 1, 2, 2), dtype=bool)  # sample, counterfactual, site, layer, group
    flipped[0, 0, 0, 0, 0] = flipped[2, 0, 0, 0, 0] = True
    p = np.where(flipped, 0.1, 0.9)
    dims = ("sample", "counterfactual", "site", "layer", "group")
    return xr.Dataset(
        {
            "flipped": (dims, flipped),
            "p_clean_answer": (dims, p),
            "clean_prob_pred": ("sample", [0.9, 0.9, 0.9]),
            "same_as_clean": (("sample", "counterfactual"), [[False], [False], [True]]),
        },
        coords={
            "sample": ["T/0", "T/1", "T/2"],
            "counterfactual": ["reversed"],
            "site": ["residual"],
            "layer": [0, 1],
            "group": ["video", "last"],
            "status": ("sample", ["ok", "ok", "ok"]),
        },
        attrs={
            "recipe_kind": "TraceProgram",
            "chart": "counterfactual_patch",
            "recipe_title": "Counterfactual patching: p(clean answer) with one group patched",
            "model": "toy",
            "data": "toy",
        },
    )


def test_the_patching_title_names_the_share_flipped_its_colour_draws():
    chart = chart_for(_patching_cube())
    spec = chart.to_dict()
    heading = spec["title"]["text"]
    colour = spec["spec"]["encoding"]["color"]
    assert colour["field"] == "flip_rate" and colour["scale"]["domain"] == [0, 1]
    assert "answers flipped" in heading and "p(clean answer)" not in heading
    assert colour["title"] == "answers flipped"
    assert "1 counterfactual videos equal to the clean one left out" in spec["title"]["subtitle"]
    # Flip rate at (layer 0, video): sample 0 of the two whose counterfactual differs: 1/2
    # (sample 2 flips too, but its counterfactual is the clean video and is left out).
    rate = {(r["layer"], r["group"]): r["flip_rate"] for r in _rows(chart)}
    assert rate[(0, "video")] == 0.5 and rate[(1, "last")] == 0.0


def test_the_logit_lens_bands_are_clipped_to_probabilities_and_legends_are_lines():
    # prob_true at layer 0 over three samples: .99, .01, .99 (mean .663, a 95% band of ±.64).
    values = np.array([0.99, 0.01, 0.99])
    prob_true = np.stack([values, values / 2], axis=1)[:, :, None]  # sample, layer, lens
    ds = xr.Dataset(
        {
            "prob_true": (("sample", "layer", "lens"), prob_true),
            "prob_false": (("sample", "layer", "lens"), 1 - prob_true),
        },
        coords={
            "sample": ["T/0", "T/1", "T/2"],
            "layer": [0, 1],
            "lens": ["norm"],
            "status": ("sample", ["ok"] * 3),
        },
        attrs={"recipe_kind": "LayerProbe", "recipe_title": "lens", "model": "m", "data": "d"},
    )
    chart = chart_for(ds)
    half = Z95 * values.std(ddof=1) / np.sqrt(3)
    assert values.mean() + half > 1 and 1 - values.mean() - half < 0  # unclipped, both leave
    rows = _rows(chart)
    assert all(0 <= r["low"] <= r["mean"] <= r["high"] <= 1 for r in rows)
    true0 = next(r for r in rows if r["letter"] == "true option" and r["layer"] == 0)
    assert np.isclose(true0["mean"], values.mean()) and true0["high"] == 1.0
    assert np.isclose(true0["low"], values.mean() - half)
    # The legend is the lines' (colour), not the band's pale fill.
    spec = chart.to_dict()
    area, line = spec["hconcat"][0]["layer"]
    assert area["encoding"]["fill"]["legend"] is None and "color" not in area["encoding"]
    assert line["encoding"]["color"]["field"] == "letter"


def test_layer_axes_end_at_the_last_layer():
    """A 32-layer axis ran on to 35 (Vega's rounded domain); every layer axis spans exactly the
    store's layers. Read off the specs of the knockout, flow-map and compared figures."""
    from flowtrace.plots.knockout import compare_chart

    def layer_domains(spec) -> list:
        found = []
        if isinstance(spec, dict):
            if spec.get("field") == "layer" and "scale" in spec:
                found.append((spec["scale"].get("domain"), spec["scale"].get("nice")))
            for value in spec.values():
                found += layer_domains(value)
        elif isinstance(spec, list):
            for value in spec:
                found += layer_domains(value)
        return found

    for name in ("cross_frame", "flow_map"):
        ds = open_cube(RESULTS / "toy" / f"{name}.zarr")
        last = int(ds["layer"].values.max())
        domains = layer_domains(chart_for(ds).to_dict())
        assert domains and all(d == ([0.0, float(last)], False) for d in domains), domains
    ds = open_cube(RESULTS / "toy" / "vql_to_ql.zarr")
    domains = layer_domains(compare_chart({"a": ds, "b": ds}).to_dict())
    assert domains and all(d[0] == [0.0, 7.0] for d in domains), domains
