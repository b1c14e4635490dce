"""A kind of one's own, in one recipe file: its declaration (a RecipeKind), its measure and its
registration; load_recipe takes it and the runner stores what it measures."""

from __future__ import annotations

from pathlib import Path

import torch

from flowtrace.data import read_samples, sample_frames
from flowtrace.models import load_model
from flowtrace.pipeline.options import resolve_data
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube

RECIPE = """
from dataclasses import dataclass, field

import numpy as np

from flowtrace.kinds.common import ReadsCleanPass
from flowtrace.pipeline.kinds import Kind, register_kind
from flowtrace.recipe import RecipeKind
from flowtrace.store.cube import CLEAN_VARIABLES, Schema, Variable


@dataclass(frozen=True)
class CleanMargin(RecipeKind):
    name: str
    title: str
    description: str = ""
    source_file: str = field(default="", compare=False)


class CleanMarginMeasure(ReadsCleanPass):
    def __init__(self, recipe, loaded, options, settled, samples):
        margin = Variable((), "float32", np.nan)
        self.schema = Schema({**CLEAN_VARIABLES, "margin": margin}, {})

    def fill(self, step):
        top = step.clean.probs.topk(2).values
        step.record.values["margin"][()] = float(top[0] - top[1])


register_kind(CleanMargin, Kind(CleanMarginMeasure))
recipe = CleanMargin("clean_margin", "p(top) - p(second) of the clean answer")
"""


def test_a_registered_kind_of_ones_own_loads_and_runs(tmp_path: Path):
    path = tmp_path / "clean_margin.py"
    path.write_text(RECIPE)
    recipe = load_recipe(path)
    out = tmp_path / "m.zarr"
    run(recipe, RunOptions(out=out, limit=3, sample_mode="all", plot=False))
    ds = open_cube(out)
    assert ds.attrs["recipe_kind"] == "CleanMargin" and (ds["status"] == "ok").all()
    # Against the model's own forward, with nothing of flowtrace between inputs and logits.
    loaded = load_model("toy", device="cpu", dtype="float32")
    for sample in read_samples(resolve_data("toy"), limit=3):
        prepared = loaded.adapter.prepare(loaded, sample, sample_frames(sample, 8))
        with torch.no_grad():
            probs = loaded.model(**prepared.inputs).logits[0, -1].float().softmax(-1)
        top = probs.topk(2).values
        stored = float(ds["margin"].sel(sample=sample.id))
        assert abs(stored - float(top[0] - top[1])) < 1e-5, sample.id
