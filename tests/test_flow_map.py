"""The flow map: every ordered group pair at every layer, each cell a plain knockout."""

from __future__ import annotations

import math

import numpy as np
import pytest
from plain_reference import plain_knockout_probs

from flowtrace.data import read_frames, read_samples
from flowtrace.models import load_model
from flowtrace.plots import chart_for
from flowtrace.recipe import FlowMap, load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy import EMBEDDED_DATA


def test_groups_expand_to_every_pair_in_sequence_order():
    recipe = FlowMap("m", "t", groups=("system", "frame[*]", "option[*]", "last"))
    edges = recipe.knockout(2, ["A"]).edge_map()
    assert list(edges) == [
        "system -> frame_0",
        "system -> frame_1",
        "system -> option_A",
        "system -> last",
        "frame_0 -> frame_1",
        "frame_0 -> option_A",
        "frame_0 -> last",
        "frame_1 -> option_A",
        "frame_1 -> last",
        "option_A -> last",
    ]


# On log p(true): the toy's p(true) runs from ~1e-3 to 1 under these cuts; float32 noise between
# the runner and a plain forward is ~5e-6 in log p.
TOLERANCE = 1e-4


def test_flow_map_cells_are_plain_knockouts(tmp_path):
    """Two- and four-option samples in one cube: cells of absent options stay empty. On the
    trained toy, where a cell's knockout moves p(true) far beyond the tolerance."""
    loaded = load_model("toy", device="cpu", dtype="float32")
    options = RunOptions(
        tasks=["Event Order", "Moving Direction"],
        limit=2,
        # A third of the toy's 728 conditions a sample; the cells checked lie in it.
        sweep=Sweep(window=1, layers=(0, 3)),
        sample_mode="all",
        device="cpu",
        out=tmp_path / "map.zarr",
    )
    result = run(load_recipe("flow_map"), options, loaded=loaded)
    ds = open_cube(result.store)
    assert result.counts["ok"] == 2 and ds.attrs["recipe_kind"] == "FlowMap"
    assert set(ds["engine"].values) == {"fast"}
    assert "option_D" in ds["source"].values and "frame_7" in ds["target"].values
    assert all(p.suffix in (".html", ".png") and p.exists() for p in result.figures)
    chart_for(ds).to_dict()  # the interactive spec validates

    for sample_id in ds["sample"].values:
        sample = next(s for s in read_samples(EMBEDDED_DATA) if s.id == sample_id)
        prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
        layout, inputs = prepared.layout, prepared.inputs
        true_id = loaded.letter_id(layout.true_letter)
        cube = ds.sel(sample=sample_id)

        def plain(source, target, layer, layout=layout, inputs=inputs, true_id=true_id):
            pairs = [(layout[target].tolist(), layout[source].tolist())] if source else []
            probs = plain_knockout_probs(loaded.model, inputs, pairs, [layer] if source else [])
            return math.log(float(probs[true_id]))

        # Each sample's strongest cell, and two fixed ones.
        moved = abs(cube["prob_true"] - cube["clean_prob_true"]).fillna(0)
        strongest = moved.where(moved == moved.max(), drop=True)
        cells = [("frame_2", "frame_5", 0), ("question", "last", 2)]
        cells.append(
            tuple(str(strongest[d].values[0]) for d in ("source", "target"))
            + (int(strongest["layer"].values[0]),)
        )
        for source, target, layer in cells:
            got = math.log(float(cube["prob_true"].sel(source=source, target=target, layer=layer)))
            assert got == pytest.approx(plain(source, target, layer), abs=TOLERANCE)
        # The strongest cell is far from no knockout and from the window one layer off.
        source, target, layer = cells[-1]
        got = math.log(float(cube["prob_true"].sel(source=source, target=target, layer=layer)))
        for wrong in (plain(None, None, 0), plain(source, target, (layer + 1) % 8)):
            assert abs(got - wrong) > 10 * TOLERANCE
        # Later groups never send to earlier ones, and absent options hold nothing.
        assert bool(cube["prob_true"].sel(source="frame_5", target="frame_2").isnull().all())
        has_d = "option_D" in layout.groups
        filled = cube["prob_true"].sel(source="option_D", target="last", layer=slice(0, 2))
        assert bool(filled.notnull().all()) == has_d
    np.testing.assert_array_equal(ds["layer"].values, np.arange(loaded.num_layers))
