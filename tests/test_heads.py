"""Head-level knockout: `--heads` cuts in some heads only; `sweep` gives each head its own cell."""

from __future__ import annotations

from pathlib import Path

import pytest
from plain_reference import plain_knockout_probs

from flowtrace.data import read_frames, read_samples
from flowtrace.engine.masks import window_layers
from flowtrace.errors import FlowtraceError
from flowtrace.models import load_model
from flowtrace.plots import chart_for
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.summary import describe


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


def cell_reference(loaded, tiny_data, sample_id, target, source, layer, window, heads):
    sample = next(s for s in read_samples(tiny_data) if s.id == sample_id)
    prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
    layout = prepared.layout
    pairs = [(layout[target].tolist(), layout[source].tolist())]
    layers = window_layers(layer, loaded.num_layers, window, "center")
    probs = plain_knockout_probs(loaded.model, prepared.inputs, pairs, layers, heads)
    return float(probs[loaded.letter_id(layout.true_letter)])


@pytest.mark.parametrize("heads", ["sweep", "1,3"])
def test_head_cells_are_plain_per_head_knockouts(
    heads, loaded, tiny_model_dir, tiny_data, tmp_path
):
    options = RunOptions(
        model=str(tiny_model_dir),
        data=str(tiny_data),
        limit=2,
        window=1,
        sample_mode="all",
        heads=heads,
        out=tmp_path / "heads.zarr",
    )
    result = run(load_recipe("vql_to_ql"), options, loaded=loaded)
    ds = open_cube(result.store)
    assert ds.attrs["heads"] == heads and result.counts["ok"] == 2
    chart_for(ds).to_dict()
    sample_id = str(ds["sample"].values[0])
    cell = ds["prob_true"].sel(sample=sample_id, source="question", target="last", layer=2)
    if heads == "sweep":
        assert ds.sizes["head"] == loaded.num_heads == 4
        # `flowtrace show` names the worst (layer, head) cell of each edge.
        table = [line for line in describe(ds) if line.startswith("question -/-> last")]
        assert len(table) == 1 and "/h" in table[0]
        for head in (0, 3):
            want = cell_reference(loaded, tiny_data, sample_id, "last", "query", 2, 1, (head,))
            assert abs(float(cell.sel(head=head)) - want) < 1e-5
    else:
        assert "head" not in ds.dims
        want = cell_reference(loaded, tiny_data, sample_id, "last", "query", 2, 1, (1, 3))
        assert abs(float(cell) - want) < 1e-5


@pytest.mark.parametrize("spec", ["4", "x", "-1", ""])
def test_bad_heads_are_refused_before_any_work(spec, loaded, tiny_model_dir, tiny_data, tmp_path):
    options = RunOptions(
        model=str(tiny_model_dir), data=str(tiny_data), limit=1, heads=spec, out=tmp_path / "h"
    )
    with pytest.raises(FlowtraceError, match="--heads"):
        run(load_recipe("cross_frame"), options, loaded=loaded)
    assert not (tmp_path / "h").exists()
