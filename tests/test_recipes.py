"""Every shipped recipe loads and cuts exactly the edges its labels name, on a real layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowtrace.data import read_frames, read_samples
from flowtrace.errors import FlowtraceError
from flowtrace.models import load_model
from flowtrace.recipe import Knockout, load_recipe, recipe_files
from flowtrace.tokens.sweep import Sweep

# What each label must cut, as (query group, key group) pairs over the layout's groups.
EXPECTED = {
    ("earlier_frames", "frame"): [(f"frame_{t}", f"frame_{s}") for t in range(8) for s in range(t)],
    ("video", "question"): None,  # the query block or the bare question, by recipe
    ("video", "last"): [("last", "video")],
    ("question", "last"): None,
    ("last", "last"): [("last", "last")],
    ("true_option", "last"): [("last", "true_option")],
    ("false_options", "last"): [("last", "false_options")],
    ("question", "true_option"): [("true_option", "question")],
    ("video", "true_option"): [("true_option", "video")],
    # open_ended: the reply so far is the prompt tail (the answer prompt)
    ("video", "reply"): [("prompt_tail", "video")],
    ("reply", "last"): [("last", "prompt_tail")],
    # the empirical study's cuts (arXiv 2508.15360); within-frame keeps each token's own key,
    # which (query, key) group pairs cannot say: tests/test_empirical_study.py checks it
    ("same_frame", "frame"): None,
    ("video", "language"): [("query", "video"), ("prompt_tail", "video"), ("last", "video")],
    ("language", "video"): [("video", "system")],
}


@pytest.fixture(scope="module")
def layout(tiny_model_dir: Path, tiny_data: Path):
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    sample = read_samples(tiny_data, tasks=["Object Count"])[0]
    return loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8)).layout


KNOCKOUTS = [p for p in recipe_files() if isinstance(load_recipe(p), Knockout)]


def test_every_shipped_recipe_loads():
    assert {p.stem for p in KNOCKOUTS} >= {"cross_frame", "vql_to_ql"}
    for path in recipe_files():
        assert load_recipe(path).name == path.stem


@pytest.mark.parametrize("path", KNOCKOUTS, ids=lambda p: p.stem)
def test_recipe_cuts_the_named_edges(path: Path, layout):
    recipe = load_recipe(path)
    conditions = recipe.conditions(layout, num_layers=4, sweep=Sweep(window=1))
    assert len(conditions) == 4 * len(recipe.labels())
    for condition in conditions[::4]:
        pairs = EXPECTED[(condition.source, condition.target)]
        if pairs is None:
            continue
        want = np.zeros((layout.seq_len, layout.seq_len), dtype=bool)
        for queries, keys in pairs:
            want[np.ix_(layout[queries], layout[keys])] = True
        want &= np.tri(layout.seq_len, dtype=bool)
        assert condition.knockout.layers == (condition.layer,)
        blocked = condition.knockout.blocked[condition.layer].numpy()
        assert np.array_equal(blocked, want), condition.source
        assert condition.edges == want.sum()


def test_recipe_file_without_recipe_is_refused(tmp_path: Path):
    bad = tmp_path / "empty.py"
    bad.write_text("x = 1\n")
    with pytest.raises(FlowtraceError, match="defines no `recipe"):
        load_recipe(bad)
