"""The inverse, top_down and bottom_up window styles end to end: each cell of a run equals a plain
PyTorch knockout over a window written out here, not taken from flowtrace."""

from __future__ import annotations

import math

import pytest
from plain_reference import plain_knockout_probs

from flowtrace.data import read_frames, read_samples
from flowtrace.models import load_model
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy import EMBEDDED_DATA

LAYERS, WINDOW = 8, 3
TOLERANCE = 1e-4  # on log p(true); float32 noise is ~5e-6
GROUPS = {"video": "video", "question": "query", "last": "last"}  # vql_to_ql's labels


def hand_window(style: str, layer: int) -> list[int]:
    """The reference code's windows for an odd width: centre ± WINDOW // 2, clipped."""
    centre = [i for i in range(layer - WINDOW // 2, layer + WINDOW // 2 + 1) if 0 <= i < LAYERS]
    if style == "center":
        return centre
    if style == "inverse":
        return [i for i in range(LAYERS) if i not in centre]
    if style == "top_down":
        return list(range(layer, LAYERS))
    assert style == "bottom_up"
    return list(range(layer + 1))


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", device="cpu", dtype="float32")


@pytest.mark.parametrize("style", ["inverse", "top_down", "bottom_up"])
def test_window_style_cells_are_plain_knockouts(style: str, toy, tmp_path):
    assert toy.num_layers == LAYERS
    options = RunOptions(
        tasks=["Moving Direction"],
        limit=1,
        sweep=Sweep(window=WINDOW, style=style),
        sample_mode="all",
        plot=False,
        device="cpu",
        out=tmp_path / f"{style}.zarr",
    )
    result = run(load_recipe("vql_to_ql"), options, loaded=toy)
    ds = open_cube(result.store)
    assert result.counts["ok"] == 1 and ds.attrs["window_style"] == style
    assert set(ds["engine"].values) == {"fast"}
    sample_id = str(ds["sample"].values[0])
    sample = next(s for s in read_samples(EMBEDDED_DATA) if s.id == sample_id)
    prepared = toy.adapter.prepare(toy, sample, read_frames(sample.video, 8))
    layout, inputs = prepared.layout, prepared.inputs
    true_id = toy.letter_id(layout.true_letter)

    def plain(source: str, target: str, layers: list[int]) -> float:
        pairs = [(layout[GROUPS[target]].tolist(), layout[GROUPS[source]].tolist())]
        return math.log(float(plain_knockout_probs(toy.model, inputs, pairs, layers)[true_id]))

    cube = ds.sel(sample=sample_id)
    clean = math.log(float(cube["clean_prob_true"]))
    strongest = (0.0, None)
    for source, target in [("video", "last"), ("question", "last")]:
        for layer in range(LAYERS):
            got = math.log(float(cube["prob_true"].sel(source=source, target=target, layer=layer)))
            assert got == pytest.approx(plain(source, target, hand_window(style, layer)), abs=1e-4)
            strongest = max(strongest, (abs(got - clean), (source, target, layer, got)))
    # The check can fail: the strongest cell moved far, and a centred window misses it.
    moved, (source, target, layer, got) = strongest
    assert moved > 100 * TOLERANCE
    assert abs(got - plain(source, target, hand_window("center", layer))) > 10 * TOLERANCE
