"""The committed reference results (results/): complete, current, and indexed truthfully."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from flowtrace.models import load_model
from flowtrace.recipe import RECIPES_DIR, recipe_files
from flowtrace.store import open_cube
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy.results import MODELS, SAMPLES, headline, regenerate

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("model", MODELS)
def test_every_shipped_recipe_has_a_current_result(model: str):
    """One store per shipped recipe and model, made from today's recipe file and weights: a
    changed recipe or a retrained model fails here until `flowtrace toy results` is rerun."""
    # Pass files (recipes/paper.py) list recipes; their results are their members'.
    shipped = {p.stem for p in recipe_files()}
    assert set(SAMPLES) == shipped
    revision = load_model(model, device="cpu", dtype="float32").revision
    for name in sorted(shipped):
        store = RESULTS / model / f"{name}.zarr"
        ds = open_cube(store)
        digest = hashlib.sha256((RECIPES_DIR / f"{name}.py").read_bytes()).hexdigest()[:16]
        assert ds.attrs["recipe_source"].endswith(digest), f"{store}: rerun flowtrace toy results"
        assert ds.attrs["model_revision"] == revision, f"{store}: rerun flowtrace toy results"
        assert (ds["status"].values == "ok").sum() >= 4
        assert store.with_suffix(".png").is_file()
    assert (RESULTS / model / "auto_pathway" / "curve.csv").is_file()


def test_the_index_headline_is_what_the_store_says(tmp_path: Path):
    regenerate(tmp_path, models=("toy",), recipes=("cross_frame",), log=lambda line: None)
    ds = open_cube(tmp_path / "toy" / "cross_frame.zarr")
    ok = ds.isel(sample=ds["status"].values == "ok")
    curve = ok["rel_change_pred"].sel(source="earlier_frames", target="frame").values
    mean = np.nanmean(curve, axis=0)
    worst = int(np.argmin(mean))
    want = f"earlier_frames -/-> frame: {mean[worst]:.1f}% at layer {worst}"
    assert headline(ds) == want
    assert want in (tmp_path / "README.md").read_text()


def test_compacting_a_store_keeps_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A store written in chunks of samples (here one each), compacted to one chunk per array:
    the same Dataset in fewer files (the committed stores are compacted)."""
    import xarray as xr

    import flowtrace.store.arrays
    from flowtrace.recipe import load_recipe
    from flowtrace.runner import RunOptions, run
    from flowtrace.store import check_store, compact

    monkeypatch.setattr(flowtrace.store.arrays, "CHUNK_SAMPLES", 1)
    store = tmp_path / "cube.zarr"
    options = RunOptions(limit=4, sweep=Sweep(layers=(0, 2)), out=store, plot=False, device="cpu")
    run(load_recipe("cross_frame"), options)

    def files() -> int:
        return sum(p.is_file() for p in store.rglob("*"))

    before, appended = open_cube(store).load(), files()
    compact(store)
    xr.testing.assert_identical(open_cube(store).load(), before)
    assert files() < appended
    assert check_store(store) == []  # compacted chunks keep their checksums


def _pathway_cube():
    """An effective-pathway store by hand: two analysed samples whose shares of edges kept are
    20% and 30% by flowtrace's count, 60% and 40% by the paper's, over 100 and 300 causal pairs."""
    import xarray as xr

    dims = ("sample", "condition")
    return xr.Dataset(
        {
            "correct": (dims, [[True, False], [True, True]]),
            "rel_change_pred": (dims, [[-2.0, -50.0], [-4.0, -30.0]]),
            "edges_kept_pct": (dims, [[20.0, 20.0], [30.0, 30.0]]),
            "paper_kept_pct": (dims, [[60.0, 60.0], [40.0, 40.0]]),
            "attention_pairs": ("sample", [100.0, 300.0]),
        },
        coords={
            "sample": ["T/0", "T/1"],
            "condition": ["pathway", "random"],
            "status": ("sample", ["ok", "ok"]),
            "clean_correct": ("sample", [True, True]),
        },
        attrs={"recipe_kind": "EffectivePathway", "recipe_title": "by hand"},
    )


def test_the_pathway_headline_gives_the_papers_share_beside_ours():
    # Ours: the mean share, 25%; the paper's pooled as the reference pools it, kept pairs over
    # all pairs: (60*100 + 40*300) / 400 = 45%. Accuracy 2/2 and 1/2.
    assert headline(_pathway_cube()) == (
        "pathway: 100% accuracy with 25.0% of edges (45.0% by the paper's count); "
        "random: 50% accuracy with 25.0% of edges (45.0% by the paper's count)"
    )


def test_redraw_draws_the_figures_and_the_index_from_the_stores_alone(tmp_path: Path):
    import shutil

    from flowtrace.toy.results import redraw

    shutil.copytree(RESULTS / "toy" / "effective_pathway.zarr", tmp_path / "toy" / "e.zarr")
    drawn = redraw(tmp_path, models=("toy",), log=lambda line: None)
    assert drawn == [tmp_path / "toy" / "e.html", tmp_path / "toy" / "e.png"]
    assert (tmp_path / "toy" / "e.png").stat().st_size > 10_000
    row = next(line for line in (tmp_path / "README.md").read_text().splitlines() if "`e`" in line)
    assert "by the paper's count" in row
