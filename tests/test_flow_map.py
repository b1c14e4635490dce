"""The flow map: every ordered group pair at every layer, each cell a plain knockout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from plain_reference import plain_knockout_probs

from flowtrace.data import read_frames, read_samples
from flowtrace.models import load_model
from flowtrace.plots import chart_for
from flowtrace.recipe import FlowMap, load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube


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


def test_flow_map_cells_are_plain_knockouts(tiny_model_dir: Path, tiny_data: Path, tmp_path):
    """Two- and four-option samples in one cube: cells of absent options stay empty."""
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    options = RunOptions(
        model=str(tiny_model_dir),
        data=str(tiny_data),
        tasks=["Event Order", "Moving Direction"],
        limit=2,
        window=1,
        sample_mode="all",
        out=tmp_path / "map.zarr",
    )
    result = run(load_recipe("flow_map"), options, loaded=loaded)
    ds = open_cube(result.store)
    assert result.counts["ok"] == 2 and ds.attrs["recipe_kind"] == "FlowMap"
    assert "option_D" in ds["source"].values and "frame_7" in ds["target"].values
    assert all(p.suffix in (".html", ".png") and p.exists() for p in result.figures)
    chart_for(ds).to_dict()  # the interactive spec validates

    for sample_id in ds["sample"].values:
        sample = next(s for s in read_samples(tiny_data) if s.id == sample_id)
        prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
        layout, inputs = prepared.layout, prepared.inputs
        cube = ds.sel(sample=sample_id)
        for source, target, layer in [("frame_2", "frame_5", 0), ("question", "last", 2)]:
            pairs = [(layout[target].tolist(), layout[source].tolist())]
            want = plain_knockout_probs(loaded.model, inputs, pairs, [layer])
            got = float(cube["prob_true"].sel(source=source, target=target, layer=layer))
            true_id = loaded.letter_id(layout.true_letter)
            assert abs(got - float(want[true_id])) < 1e-5
        # Later groups never send to earlier ones, and absent options hold nothing.
        assert bool(cube["prob_true"].sel(source="frame_5", target="frame_2").isnull().all())
        has_d = "option_D" in layout.groups
        filled = bool(cube["prob_true"].sel(source="option_D", target="last").notnull().all())
        assert filled == has_d
    np.testing.assert_array_equal(ds["layer"].values, np.arange(loaded.num_layers))
