"""A kind of one's own, in one recipe file: its declaration (a RecipeKind), its measure and its
registration; load_recipe takes it and the runner stores what it measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    margin = ds["margin"].values
    # The top probability is the clean prediction's, which every store records on its own.
    assert (margin > 0).all() and (margin < ds["clean_prob_pred"].values).all()
    assert np.isfinite(margin).all()
