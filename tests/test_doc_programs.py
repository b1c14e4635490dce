"""Every program docs/ shows (a block after `<!-- program: NAME -->`) runs as a user copies it,
and the knockout sweep written as a program equals the declared knockout of the same edge."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from flowtrace.kinds.declarations import Knockout
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCKS = {
    name: code
    for doc in sorted(DOCS.glob("*.md"))
    for name, code in re.findall(
        r"<!-- program: (\w+) -->\s*```python\n(.*?)```", doc.read_text(), re.S
    )
}


def stored(recipe, out: Path):
    run(recipe, RunOptions(out=out, limit=2, sample_mode="all", plot=False))
    return open_cube(out)


def test_docs_show_programs():
    assert {"cut_and_ablate", "video_to_last_sweep"} <= set(BLOCKS)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_each_docs_program_runs_as_copied(name: str, tmp_path: Path):
    path = tmp_path / f"{name}.py"
    path.write_text(BLOCKS[name])
    ds = stored(load_recipe(path), tmp_path / f"{name}.zarr")
    assert (ds["status"] == "ok").all(), ds["reason"].values
    if name == "video_to_last_sweep":
        declared = Knockout(name, name, {"video -> last": "video -> last"})
        want = stored(declared, tmp_path / "declared.zarr")["prob_pred"].values[:, :, 0, 0]
        np.testing.assert_allclose(ds["prob_pred"].values, want, rtol=0, atol=1e-6)
        assert np.nanmax(np.abs(ds["rel_change_pred"].values)) > 1.0  # the cut moved p
