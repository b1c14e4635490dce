"""--sample-mode wrong analyses exactly the samples whose clean answer is wrong, as a plain
forward decides it, and skips the rest with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from flowtrace.data import read_frames, read_samples
from flowtrace.models import load_model
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy import EMBEDDED_DATA

FLIPPED = {0, 2}  # samples of Object Color whose answer is changed to another option


def flipped_copy(root: Path) -> Path:
    """The toy's held-out Object Color clips with two answers changed: the trained toy, which
    gets the real answers right, is wrong on exactly those two."""
    (root / "json").mkdir(parents=True)
    items = json.loads((Path(EMBEDDED_DATA) / "json" / "object_color.json").read_text())[:4]
    for i in FLIPPED:
        items[i]["answer"] = next(c for c in items[i]["candidates"] if c != items[i]["answer"])
    (root / "json" / "object_color.json").write_text(json.dumps(items))
    shutil.copytree(Path(EMBEDDED_DATA) / "video" / "object_color", root / "video" / "object_color")
    return root


def test_sample_mode_wrong_keeps_the_wrongly_answered(tmp_path: Path):
    data = flipped_copy(tmp_path / "data")
    toy = load_model("toy", device="cpu", dtype="float32")
    plain_wrong = []
    for sample in read_samples(str(data)):
        prepared = toy.adapter.prepare(toy, sample, read_frames(sample.video, 8))
        with torch.no_grad():
            token = int(toy.model(**prepared.inputs).logits[0, -1].argmax())
        answer = toy.tokenizer.decode([token]).strip()
        plain_wrong.append(answer.lower() != sample.answer_letter.lower())
    assert [i for i, w in enumerate(plain_wrong) if w] == sorted(FLIPPED)

    options = RunOptions(data=str(data), sample_mode="wrong", sweep=Sweep(window=3, layers=(0, 2)))
    options.out, options.plot, options.device = tmp_path / "wrong.zarr", False, "cpu"
    result = run(load_recipe("vql_to_ql"), options, loaded=toy)
    ds = open_cube(result.store)
    status = [str(s) for s in ds["status"].values]
    assert status == ["ok" if w else "skipped" for w in plain_wrong]
    assert result.counts["ok"] == 2 and result.counts["skipped"] == 2
    assert ds.attrs["sample_mode"] == "wrong"
    clean_correct = ds["clean_correct"].values.astype(bool)
    np.testing.assert_array_equal(clean_correct, ~np.array(plain_wrong))
    analysed = ds.isel(sample=np.array(plain_wrong))
    for source, target in [("video", "question"), ("question", "last"), ("last", "last")]:
        cells = analysed["prob_true"].sel(source=source, target=target).isel(layer=slice(0, 2))
        assert bool(cells.notnull().all())
    skipped = ds.isel(sample=~np.array(plain_wrong))
    assert bool(skipped["prob_true"].isnull().all())
    assert all("--sample-mode wrong" in str(r) for r in skipped["reason"].values)
