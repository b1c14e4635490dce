"""Open-ended samples under knockout: the reference answer's first token, and greedy replies.

The toy's held-out folder read as `tvbench-open` gives open-ended samples of the two tasks it
shares with TVBench's open-ended set: Moving Direction with its answer prompt, and Object Count,
whose word answers fail the reference's digit rule. The checks compare with a plain-PyTorch
forward and with the tokenizer's vocabulary, not with flowtrace's own output.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from plain_reference import plain_knockout_probs

from flowtrace.data import read_frames, read_samples
from flowtrace.errors import FlowtraceError
from flowtrace.models import load_model
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy import EMBEDDED_DATA

OPEN = f"tvbench-open:{EMBEDDED_DATA}"


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def open_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("open") / "open.zarr"
    options = RunOptions(
        data=OPEN, limit=4, sample_mode="all", out=out, plot=False, device="cpu", generate=3
    )
    result = run(load_recipe("open_ended"), options)
    return result, open_cube(out).load()


def test_continuation_token_is_the_answer_word(toy):
    vocab = toy.tokenizer.get_vocab()
    prompt = "USER: Which way? ASSISTANT:\nThe yellow square moves to the"
    assert toy.continuation_id(prompt, "left") == vocab["left"]
    assert toy.continuation_id(prompt + " ", "right") == vocab["right"]


def test_open_ended_samples_are_analysed_with_their_reasons(open_run):
    result, ds = open_run
    status = dict(zip(ds["task"].values.tolist(), ds["status"].values.tolist(), strict=True))
    assert status == {
        "Moving Direction": "ok",
        "Object Count": "failed",  # the reference's open-ended rule wants digit answers
    }
    assert any("needs one digit" in r for r in result.reasons)
    ok = ds.isel(sample=ds.status.values == "ok")
    assert set(ok["answer_letter"].values.tolist()) == {""}
    assert ds.attrs["generate"] == 3 and ds.attrs["engine"] == "reference"
    assert all(text for text in ok["clean_text"].values.tolist())
    assert ok["new_text"].sel(source="video", target="last").values.size


def test_open_ended_probability_is_the_reference_answers_first_token(open_run, toy):
    """p(first answer token) under video -> last in a window equals a plain forward with a
    hand-built mask, read at the answer word's vocabulary id."""
    _, ds = open_run
    sample = next(
        s for s in read_samples(OPEN, tasks=["Moving Direction"]) if s.id in ds["sample"].values
    )
    assert sample.answer in ("left", "right")  # the reference's rule for this task
    prepared = toy.adapter.prepare(toy, sample, read_frames(sample.video, 8))
    layout = prepared.layout
    ids = prepared.inputs["input_ids"][0]
    video_token = toy.tokenizer.convert_tokens_to_ids("<video>")
    video = (ids == video_token).nonzero()[:, 0].tolist()
    last = [len(ids) - 1]
    assert layout["video"].tolist() == video
    answer_id = toy.tokenizer.get_vocab()[sample.answer]
    at = ds.sel(sample=sample.id)
    # The toy answers letters, so p(answer word) is ~4e-5 and a knockout moves it by 3e-8..5e-6:
    # compare log p, where float32 noise is ~5e-6 and these knockouts move it by 1e-3 or more.
    tolerance = 1e-4
    clean = math.log(float(plain_knockout_probs(toy.model, prepared.inputs, [], [])[answer_id]))
    assert math.log(float(at["clean_prob_true"])) == pytest.approx(clean, abs=tolerance)

    def windowed(layer: int) -> float:
        window = [x for x in (layer - 1, layer, layer + 1) if 0 <= x < 8]  # width 3, centred
        probs = plain_knockout_probs(toy.model, prepared.inputs, [(last, video)], window)
        return math.log(float(probs[answer_id]))

    for layer in (0, 3, 7):
        got = math.log(float(at["prob_true"].sel(layer=layer, source="video", target="last")))
        assert got == pytest.approx(windowed(layer), abs=tolerance)
        # The wrong answers fail: no knockout, and the window one layer off.
        assert abs(got - clean) > 3 * tolerance
        assert abs(got - windowed(layer - 1 if layer else 1)) > 3 * tolerance
    # rel_change_true from the plain values: 100 (p - clean) / clean, to a 1e-4 relative error of p.
    got = at["rel_change_true"].sel(source="video", target="last", layer=3)
    want = 100 * (math.exp(windowed(3) - clean) - 1)
    assert float(got) == pytest.approx(want, abs=100 * 3 * tolerance)
    assert abs(want) > 100 * 10 * tolerance


def test_option_edges_fail_open_ended_samples_with_the_reason(tmp_path: Path):
    options = RunOptions(data=OPEN, tasks=["Moving Direction"], limit=1, sample_mode="all")
    options.out, options.plot, options.device = tmp_path / "q.zarr", False, "cpu"
    result = run(load_recipe("question_options_to_last"), options)
    assert result.counts == {"failed": 1}
    (reason,) = result.reasons
    assert "true_option" in reason and "open-ended prompt shows no options" in reason


def test_generate_is_refused_where_it_means_nothing(tmp_path: Path):
    options = RunOptions(limit=1, out=tmp_path / "g.zarr", plot=False, device="cpu", generate=2)
    with pytest.raises(FlowtraceError, match="generate: recipe gen_prob"):
        run(load_recipe("gen_prob"), options)
    options.generate = -1
    with pytest.raises(FlowtraceError, match="generate: -1"):
        run(load_recipe("cross_frame"), options)


def test_generate_on_a_multiple_choice_recipe_keeps_the_letter_scores(tmp_path: Path, toy):
    """--generate adds replies to any knockout recipe; the scores stay what the fast engine
    gives without it."""
    common = {"limit": 1, "plot": False, "device": "cpu", "sweep": Sweep(layers=(0, 2))}
    with_text = tmp_path / "with.zarr"
    run(load_recipe("cross_frame"), RunOptions(out=with_text, generate=2, **common), loaded=toy)
    plain = tmp_path / "plain.zarr"
    run(load_recipe("cross_frame"), RunOptions(out=plain, **common), loaded=toy)
    a, b = open_cube(with_text).load(), open_cube(plain).load()
    assert "new_text" in a and "new_text" not in b
    assert a["engine"].values.tolist() == ["reference"] and b["engine"].values.tolist() == ["fast"]
    swept = a["prob_pred"].isel(layer=slice(0, 2))
    np.testing.assert_allclose(swept, b["prob_pred"].isel(layer=slice(0, 2)), atol=1e-5)
    letter = str(a["answer_letter"].values[0])
    assert str(a["clean_text"].values[0]).startswith(letter)  # the toy replies with the letter
