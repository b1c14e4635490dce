"""Heads that carry time (recipes/temporal_heads.py) and steering chosen heads
(recipes/steer_heads.py) on the planted toy, against plain PyTorch hooks written here (fp32 CPU,
1e-5), and the head scores against the plant: frames exchange information only in layers 0-3.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from flowtrace.data import SampleError, read_frames, read_samples
from flowtrace.engine import FastEngine
from flowtrace.kinds.program import ProgramMeasure
from flowtrace.models import load_model
from flowtrace.program import Trace
from flowtrace.recipe import load_recipe
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy import EMBEDDED_DATA

TOLERANCE = 1e-5
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CROSS_FRAME_OPEN = range(0, 4)


@pytest.fixture(scope="module")
def planted():
    return load_model("planted", device="cpu", dtype="float32")


def trace_for(loaded, task: str, sample_id: str | None = None) -> Trace:
    data = read_samples(EMBEDDED_DATA)
    sample = next(s for s in data if s.task == task and sample_id in (None, s.id))
    prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
    engine = FastEngine(loaded)
    probs = engine.clean(prepared.inputs)
    true = loaded.letter_id(prepared.layout.true_letter)
    return Trace(
        sample, prepared.inputs, prepared.layout, loaded, int(probs.argmax()), true, probs, 8, 0,
        engine, data,
    )  # fmt: skip


@pytest.fixture(scope="module")
def t(planted):
    return trace_for(planted, "Moving Direction")


def run_program(name: str, t: Trace, **constants):
    recipe = load_recipe(RECIPES / f"{name}.py")
    recipe.program.__globals__.update(constants)  # the recipe file's settings, as a user edits
    return dict(ProgramMeasure(recipe, t.loaded, 8, [t.sample], 0).run_on(t))


# -- the reference: the model's own modules and hooks alone ---------------------------------------


def cross_frame_pairs(layout) -> np.ndarray:
    """(T, T) frame t's tokens (queries) × tokens of frames < t (keys)."""
    cut = np.zeros((layout.seq_len, layout.seq_len), dtype=bool)
    for t in range(1, layout.num_frames):
        earlier = np.concatenate([layout[f"frame_{s}"] for s in range(t)])
        cut[np.ix_(layout[f"frame_{t}"], earlier)] = True
    return cut


def plain_head_cut(model, inputs, layer: int, head: int, cut: np.ndarray) -> torch.Tensor:
    """p(next token) with `cut` added to the model's own mask in one head of one layer."""

    def swap(module, args, kwargs):
        own = kwargs["attention_mask"]  # (1, 1, T, T) additive: causal and the plant
        heads = model.config.text_config.num_attention_heads
        mask = own.expand(1, heads, *own.shape[-2:]).clone()
        mask[0, head][torch.from_numpy(cut)] = torch.finfo(mask.dtype).min
        kwargs["attention_mask"] = mask
        return args, kwargs

    attention = model.model.language_model.layers[layer].self_attn
    handle = attention.register_forward_pre_hook(swap, with_kwargs=True)
    try:
        with torch.no_grad():
            return model(**inputs).logits[0, -1].float().softmax(-1)
    finally:
        handle.remove()


def plain_head_scale(model, inputs, heads: dict[int, list[int]], scale: float) -> torch.Tensor:
    """p(next token) with the listed heads' slices of o_proj's input multiplied by `scale`."""
    config = model.config.text_config
    size = config.hidden_size // config.num_attention_heads
    handles = []
    for layer, chosen in heads.items():

        def scaled(module, args, chosen=chosen):
            x = args[0].clone()
            for head in chosen:
                x[..., head * size : (head + 1) * size] *= scale
            return (x,)

        o_proj = model.model.language_model.layers[layer].self_attn.o_proj
        handles.append(o_proj.register_forward_pre_hook(scaled))
    try:
        with torch.no_grad():
            return model(**inputs).logits[0, -1].float().softmax(-1)
    finally:
        for handle in handles:
            handle.remove()


# -- temporal heads -------------------------------------------------------------------------------


def test_head_scores_are_plain_per_head_cross_frame_cuts(t, planted):
    out = run_program("temporal_heads", t)
    p = out["p_answer"]
    assert p.dims == ("layer", "head") and p.shape == (8, 4)
    cut = cross_frame_pairs(t.layout)
    clean = float(t.clean_probs[t.answer_id])
    for layer, head in [(0, 0), (1, 3), (2, 1), (2, 3), (3, 2), (5, 1)]:
        want = plain_head_cut(planted.model, t.inputs, layer, head, cut)
        got = float(p.sel(layer=layer, head=head))
        assert abs(got - float(want[t.answer_id])) < TOLERANCE, (layer, head)
        want_rel = 100 * (float(want[t.answer_id]) - clean) / clean
        assert abs(float(out["rel_change"].sel(layer=layer, head=head)) - want_rel) < 1e-3
        assert bool(out["flipped"].sel(layer=layer, head=head)) == (
            int(want.argmax()) != t.answer_id
        )


def test_head_scores_find_time_only_where_the_plant_lets_frames_meet(planted):
    """Frames exchange information only in layers 0-3: over the first four held-out samples of
    each task, every head of layers 4-7 scores exactly nothing, and on average over the samples
    the head whose cut costs most lies in layers 0-3 and costs over 20% of p(answer). (The plant
    fixes layers, not heads: which head carries time varies by sample, 0-3 at layer 2 on most.)"""
    from flowtrace.data import synth

    scores = []
    for task in synth.TASKS:
        for sample in [s for s in read_samples(EMBEDDED_DATA) if s.task == task][:4]:
            t = trace_for(planted, task, sample.id)
            rel = run_program("temporal_heads", t)["rel_change"].values
            assert float(np.abs(rel[4:]).max()) < 1e-4, (sample.id, rel[4:])
            scores.append(rel)
    mean = np.mean(scores, axis=0)
    layer, _ = np.unravel_index(np.argmin(mean), mean.shape)
    assert layer in CROSS_FRAME_OPEN and mean.min() < -20, mean.round(1)


def test_head_scores_are_the_heads_sweep_of_cross_frame(t, planted):
    """The recipe fixes what `flowtrace run cross_frame --heads sweep --window 1` computes."""
    scores = run_program("temporal_heads", t)["p_answer"]
    conditions = load_recipe("cross_frame").conditions(
        t.layout, 8, Sweep(window=1, heads="sweep"), planted.num_heads
    )
    probs = FastEngine(planted).knockout(t.inputs, [c.knockout for c in conditions])
    for condition, row in zip(conditions, probs, strict=True):
        (head,) = condition.heads
        got = float(scores.sel(layer=condition.layer, head=head))
        assert abs(got - float(row[t.answer_id])) < TOLERANCE


# -- steering -------------------------------------------------------------------------------------


def test_steering_equals_plain_o_proj_hooks(t, planted):
    heads = [(1, 0), (1, 1), (2, 0), (2, 1), (5, 2)]
    layers, scales = range(1, 3), (0.0, 0.5, 2.0, 3.0)
    out = run_program("steer_heads", t, HEADS=heads, LAYERS=layers, SCALES=scales)
    assert out["coords"] == {"scale": list(scales)}
    chosen = {1: [0, 1], 2: [0, 1]}  # (5, 2) lies outside LAYERS: left alone
    _, p = out["p_answer"]
    for i, scale in enumerate(scales):
        want = plain_head_scale(planted.model, t.inputs, chosen, scale)
        assert abs(float(p[i]) - float(want[t.answer_id])) < TOLERANCE, scale
        assert abs(float(out["p_true"][1][i]) - float(want[t.true_id])) < TOLERANCE
        assert bool(out["correct"][1][i]) == (int(want.argmax()) == t.true_id)
    # Not a comparison of nothing: silencing these heads costs p(answer) far beyond the tolerance.
    assert float(out["rel_change"][1][0]) < -5


def test_scaling_every_head_is_scaling_the_attention_output(t, planted):
    """o_proj is linear without bias: every head scaled by s is the attention output scaled by
    s, which the intervention API's Steer says (an identity independent of head slicing)."""
    from flowtrace.interventions import Steer

    every = [(3, h) for h in range(planted.num_heads)]
    out = run_program("steer_heads", t, HEADS=every, LAYERS=range(3, 4), SCALES=(0.0, 2.5))
    _, p = out["p_answer"]
    # A group of every position, for Steer.
    everything = {**t.layout.groups, "everything": np.arange(t.layout.seq_len)}
    whole = replace(t, layout=replace(t.layout, groups=everything), scratch={})  # fields only
    steered = whole.run([Steer("attention", "everything", 3, scale=s) for s in (0.0, 2.5)])
    for i in range(2):
        assert abs(float(p[i]) - float(steered.probs[i, t.answer_id])) < TOLERANCE


def test_heads_outside_the_model_fail_the_sample_with_the_fix(t):
    with pytest.raises(SampleError, match=r"head \(1, 9\) is not in this model.*edit HEADS"):
        run_program("steer_heads", t, HEADS=[(1, 9)], LAYERS=range(1, 3))
    with pytest.raises(SampleError, match="no head of HEADS lies in LAYERS"):
        run_program("steer_heads", t, HEADS=[(6, 0)], LAYERS=range(1, 3))
