"""The sample browser of a per-frame attention-mass store (recipes/frame_attention_mass.py):
each frame's mass drawn on it, and the store's anchor frame outlined, on a cube built by hand
and on the recipe's own store."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from flowtrace.recipe import load_recipe
from flowtrace.report.browser import per_frame_effects, sample_browser
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube


def mass_cube() -> xr.Dataset:
    """2 analysed samples, 2 layers, targets last and query, 3 frames; the mass of sample s,
    layer l, target g on frame f is (1 + f + 10 s + 100 l + 1000 g) / 10^4, and the anchor the
    store names is frame (s + l + g) mod 3, which is not always the largest mass: the browser
    must show the store's anchor, not one of its own."""
    mass = np.zeros((2, 2, 2, 3))
    anchor = np.zeros((2, 2, 2), dtype=np.int64)
    for s in range(2):
        for layer in range(2):
            for g in range(2):
                anchor[s, layer, g] = (s + layer + g) % 3
                for f in range(3):
                    mass[s, layer, g, f] = (1 + f + 10 * s + 100 * layer + 1000 * g) / 1e4
    return xr.Dataset(
        {
            "attention_mass": (("sample", "layer", "target", "frame"), mass),
            "anchor_frame": (("sample", "layer", "target"), anchor),
        },
        coords={
            "sample": ["A/0", "B/0"],
            "layer": [0, 1],
            "target": ["last", "query"],
            "frame": ["frame_0", "frame_1", "frame_2"],
            "status": ("sample", ["ok", "ok"]),
            "task": ("sample", ["A", "B"]),
            "video": ("sample", ["/nowhere/a.mp4", "/nowhere/b.mp4"]),
            "question": ("sample", ["q?"] * 2),
            "candidates": ("sample", ['["x", "y"]'] * 2),
            "answer": ("sample", ["x", "y"]),
            "answer_letter": ("sample", ["A", "B"]),
            "clean_pred": ("sample", ["A", "B"]),
            "clean_correct": ("sample", [True, True]),
        },
        attrs={"recipe_kind": "TraceProgram", "frames": 3},
    )


def test_each_frame_carries_its_mass_and_the_stores_anchor_is_outlined():
    table, title, short = per_frame_effects(mass_cube())
    assert "anchor" in title and short == "attention mass"
    assert len(table) == 2 * 2 * 2 * 3
    for row in table.itertuples():
        g = {"last": 0, "query": 1}[row.target]
        assert row.value == (1 + row.frame + 10 * row.s + 100 * row.layer + 1000 * g) / 1e4
        assert row.anchor == int(row.frame == (row.s + row.layer + g) % 3)
    spec = sample_browser(mass_cube())[0].to_dict(validate=False)
    outlines = [
        layer
        for block in spec["vconcat"]
        for layer in block.get("layer", [])
        if isinstance(layer.get("mark"), dict) and layer["mark"].get("filled") is False
    ]
    assert len(outlines) == 1
    assert {"filter": "(datum.anchor === 1)"} in outlines[0]["transform"]
    binds = [p["bind"]["name"] for p in spec["params"] if "bind" in p]
    assert "target " in binds  # not "cut off from": nothing is cut


def test_the_recipes_store_marks_the_frame_with_most_mass(
    tiny_model_dir: Path, tiny_data, tmp_path
):
    options = RunOptions(
        model=str(tiny_model_dir),
        data=str(tiny_data),
        limit=2,
        sample_mode="all",
        out=tmp_path / "mass.zarr",
        plot=False,
    )
    store = run(load_recipe("frame_attention_mass"), options).store
    ds = open_cube(store).load()
    table, _, _ = per_frame_effects(ds)
    mass = ds["attention_mass"].values  # (sample, layer, target, frame)
    targets = list(ds["target"].values)
    marked = table[table["anchor"] == 1]
    # One anchor per sample, layer and target, at the frame with the most mass there.
    assert len(marked) == mass.shape[0] * mass.shape[1] * mass.shape[2]
    for row in marked.itertuples():
        cells = mass[row.s, row.layer, targets.index(row.target)]
        assert row.frame == int(np.argmax(cells)), (row, cells)
    spec = sample_browser(ds)[0].to_dict(validate=False)
    tables = [pd.read_csv(io.StringIO(v)) for v in spec["datasets"].values() if isinstance(v, str)]
    assert any("anchor" in t.columns and t["anchor"].sum() == len(marked) for t in tables)
