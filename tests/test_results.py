"""The committed reference results (results/): complete, current, and indexed truthfully."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from flowtrace.models import load_model
from flowtrace.recipe import RECIPES_DIR, recipe_files
from flowtrace.store import open_cube
from flowtrace.sweep import Sweep
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
