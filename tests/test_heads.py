"""Head-level knockout: `--heads` cuts in some heads only; `sweep` gives each head its own cell."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from plain_reference import plain_knockout_probs

from flowtrace.data import read_frames, read_samples
from flowtrace.errors import FlowtraceError
from flowtrace.models import load_model
from flowtrace.plots import chart_for
from flowtrace.reading.summary import describe
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy import EMBEDDED_DATA


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def toy():
    """The trained toy: one head's cut moves p(true) by up to 0.85, far above the tolerance."""
    return load_model("toy", device="cpu", dtype="float32")


# On log p(true): p runs from 2e-5 to 1 here, so an absolute bound would be loose or unmeetable.
# float32 noise between the runner and a plain forward is ~5e-6 in log p.
TOLERANCE = 1e-4


def cell_reference(loaded, sample_id, target, source, layer, window, heads):
    sample = next(s for s in read_samples(EMBEDDED_DATA) if s.id == sample_id)
    prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
    layout = prepared.layout
    pairs = [(layout[target].tolist(), layout[source].tolist())] if layer is not None else []
    layers = Sweep(window).window_at(layer, loaded.num_layers) if pairs else []
    probs = plain_knockout_probs(loaded.model, prepared.inputs, pairs, layers, heads)
    return float(probs[loaded.letter_id(layout.true_letter)])


GROUPS = {"video": "video", "question": "query", "last": "last"}  # vql_to_ql's labels


def strongest_cell(cube):
    """(source, target, layer[, head]) of the cell whose p(true) moved most from the clean one."""
    moved = abs(cube["prob_true"] - cube["clean_prob_true"]).fillna(0)
    index = np.unravel_index(int(moved.argmax()), moved.shape)
    return {dim: cube["prob_true"][dim].values[i] for dim, i in zip(moved.dims, index, strict=True)}


@pytest.mark.parametrize("heads", ["sweep", "1,3"])
def test_head_cells_are_plain_per_head_knockouts(heads, toy, tmp_path):
    options = RunOptions(
        limit=2,
        sweep=Sweep(window=1, heads=heads),
        sample_mode="all",
        plot=False,
        device="cpu",
        out=tmp_path / "heads.zarr",
    )
    result = run(load_recipe("vql_to_ql"), options, loaded=toy)
    ds = open_cube(result.store)
    assert ds.attrs["heads"] == heads and result.counts["ok"] == 2
    assert set(ds["engine"].values) == {"fast"}
    chart_for(ds).to_dict()
    if heads == "sweep":
        assert ds.sizes["head"] == toy.num_heads == 4
        # `flowtrace show` names the worst (layer, head) cell of each edge.
        table = [line for line in describe(ds) if line.startswith("question -/-> last")]
        assert len(table) == 1 and "/h" in table[0]
    else:
        assert "head" not in ds.dims
    for sample_id in ds["sample"].values:
        cube = ds.sel(sample=sample_id)
        cell = strongest_cell(cube)
        got = float(cube["prob_true"].sel(cell))
        source, target = GROUPS[str(cell["source"])], GROUPS[str(cell["target"])]
        layer = int(cell["layer"])
        chosen = (int(cell["head"]),) if heads == "sweep" else (1, 3)

        plain = partial(cell_reference, toy, sample_id, target, source, window=1)
        assert math.log(got) == pytest.approx(math.log(plain(layer, heads=chosen)), abs=TOLERANCE)
        # Wrong answers miss by far more than the tolerance: no knockout, the window one layer
        # off, and the cut in the next head (per-head cells) or in every head (heads 1 and 3).
        shifted = (layer + 1) % toy.num_layers
        wrong = [plain(None, heads=None), plain(shifted, heads=chosen)]
        if heads == "sweep":
            wrong.append(plain(layer, heads=((chosen[0] + 1) % toy.num_heads,)))
        else:
            wrong.append(plain(layer, heads=None))
        misses = [abs(math.log(got) - math.log(w)) for w in wrong]
        assert min(misses) > 10 * TOLERANCE, (cell, got, wrong)


@pytest.mark.parametrize("spec", ["4", "x", "-1", ""])
def test_bad_heads_are_refused_before_any_work(spec, loaded, tiny_model_dir, tiny_data, tmp_path):
    common = dict(model=str(tiny_model_dir), data=str(tiny_data), limit=1, out=tmp_path / "h")
    with pytest.raises(FlowtraceError, match="heads") as caught:  # "4": the model has heads 0-3
        options = RunOptions(sweep=Sweep(heads=spec), **common)
        run(load_recipe("cross_frame"), options, loaded=loaded)
    assert caught.value.option == "heads"
    assert not (tmp_path / "h").exists()
