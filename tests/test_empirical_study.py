"""The empirical study's cuts (arXiv 2508.15360: recipes/within_frame.py, language_video.py) on
the planted toy: their edges against sets written by hand from the layout, their knockouts
against plain PyTorch hooks written here (fp32 CPU, 1e-5), and their effects against the routes
planted in the model (flowtrace.models.planted.ROUTES): frames exchange information in layers
0-3, the query reads the last frame in layers 2-5, the last token reads the query in 4-7 and
nothing else reads video.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowtrace.data import read_frames, read_samples, synth
from flowtrace.engine import FastEngine
from flowtrace.models import load_model
from flowtrace.recipe import load_recipe, load_recipes
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy import EMBEDDED_DATA

TOLERANCE = 1e-5
LAYERS = 8
QUERY_READS_VIDEO = range(2, 6)  # frame_7 -> query, the only route out of the video


@pytest.fixture(scope="module")
def planted():
    return load_model("planted", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def prepared(planted):
    """Two held-out samples per task."""
    samples = [s for task in synth.TASKS for s in read_samples(EMBEDDED_DATA, tasks=[task])[:2]]
    return [planted.adapter.prepare(planted, s, read_frames(s.video, 8)) for s in samples]


# -- the reference: cut matrices from the layout's groups, a mask swapped in by a pre-hook -------


def by_hand(label: str, layout) -> np.ndarray:
    """(T, T) [query, key] pairs each label cuts, written from its docstring."""
    cut = np.zeros((layout.seq_len, layout.seq_len), dtype=bool)
    if label == "same_frame -> frame":
        for t in range(layout.num_frames):
            frame = layout[f"frame_{t}"]
            for i, query in enumerate(frame):
                cut[query, frame[:i]] = True  # earlier tokens of its frame, not itself
    elif label == "video -> language":
        text = np.concatenate([layout["query"], layout["prompt_tail"], layout["last"]])
        cut[np.ix_(text, layout["video"])] = True
    elif label == "language -> video":
        cut[np.ix_(layout["video"], layout["system"])] = True
    return cut


def plain_probs(model, inputs, cuts: dict[int, np.ndarray]) -> torch.Tensor:
    """p(next token) with `cuts` {layer: (T, T) bool} added to the model's own (planted) mask
    in those layers by a forward pre-hook on the attention module; one plain forward."""
    handles = []
    for layer, cut in cuts.items():

        def swap(module, args, kwargs, cut=cut):
            mask = kwargs["attention_mask"].clone()  # (1, 1, T, T) additive: causal and the plant
            mask[..., torch.from_numpy(cut)] = torch.finfo(mask.dtype).min
            kwargs["attention_mask"] = mask
            return args, kwargs

        attention = model.model.language_model.layers[layer].self_attn
        handles.append(attention.register_forward_pre_hook(swap, with_kwargs=True))
    try:
        with torch.no_grad():
            return model(**inputs).logits[0, -1].float().softmax(-1)
    finally:
        for handle in handles:
            handle.remove()


def knocked(planted, prepared, recipe: str, sweep: Sweep):
    """{label: (clean (V,), per sweep position (layers, V))} through flowtrace's fast engine."""
    engine = FastEngine(planted)
    clean = engine.clean(prepared.inputs)
    conditions = load_recipe(recipe).conditions(prepared.layout, LAYERS, sweep)
    probs = engine.knockout(prepared.inputs, [c.knockout for c in conditions])
    assert engine.used == {"fast"}
    out = {}
    for label in dict.fromkeys(f"{c.source} -> {c.target}" for c in conditions):
        rows = [i for i, c in enumerate(conditions) if f"{c.source} -> {c.target}" == label]
        out[label] = (clean, probs[rows])
    return out


# -- the recipes cut what they say, as plain hooks do ---------------------------------------------


@pytest.mark.parametrize("recipe", ["within_frame", "language_video"])
def test_recipe_edges_are_the_hand_written_sets(recipe, prepared):
    layout = prepared[0].layout
    for condition in load_recipe(recipe).conditions(layout, LAYERS, Sweep(window=1)):
        label = f"{condition.source} -> {condition.target}"
        blocked = condition.knockout.blocked[condition.layer].numpy()
        assert np.array_equal(blocked, by_hand(label, layout)), label
    # Within a frame, every token keeps its own key and the frame's first token loses nothing.
    within = by_hand("same_frame -> frame", layout)
    assert not within.diagonal().any() and not within[layout["frame_0"][0]].any()


@pytest.mark.parametrize("style", ["center", "top_down"])
@pytest.mark.parametrize("recipe", ["within_frame", "language_video"])
def test_knockouts_equal_plain_hooks(recipe, style, planted, prepared):
    """Every single-layer window and every cutoff (from a layer to the last) of one sample."""
    sample = prepared[0]
    sweep = Sweep(window=1, style=style)
    for label, (_, probs) in knocked(planted, sample, recipe, sweep).items():
        cut = by_hand(label, sample.layout)
        for layer in range(LAYERS):
            layers = range(layer, LAYERS) if style == "top_down" else [layer]
            want = plain_probs(planted.model, sample.inputs, {k: cut for k in layers})
            gap = float((probs[layer] - want).abs().max())
            assert gap < TOLERANCE, (label, layer, gap)


# -- ground truth: the plant ---------------------------------------------------------------------


def test_within_frame_cuts_leave_the_planted_routes_alone(planted, prepared):
    """No route of the plant runs inside a frame: cutting each frame token from the earlier
    tokens of its frame, in any one layer or from any layer to the last, changes no answer and
    p(answer) by under 1% (cross-frame cuts in layers 0-3 take multi-frame tasks to chance:
    tests/test_planted_trained.py). From layer 5 on nothing outside the video reads it, so the
    cut changes p by nothing at all."""
    for sample in prepared:
        for style in ("center", "top_down"):
            sweep = Sweep(window=1, style=style)
            clean, probs = knocked(planted, sample, "within_frame", sweep)["same_frame -> frame"]
            answer = int(clean.argmax())
            assert (probs.argmax(-1) == answer).all()
            change = (probs[:, answer] - clean[answer]).abs() / clean[answer]
            assert float(change.max()) < 0.01, change
            assert float((probs[5:] - clean).abs().max()) < 1e-6


def test_text_reading_video_matters_only_where_the_query_reads_it(planted, prepared):
    """The study's language-to-video knockout (`video -> language`): in one layer it changes p
    only in layers 2-5, where the plant lets the query read the last frame (exactly nothing
    elsewhere), and there it costs p(answer) over 5% on average at its worst layer; from a
    cutoff layer to the last it costs over 5% from any layer up to 4 and nothing from layer 6."""
    per_layer, cutoff = [], []
    for sample in prepared:
        for style, out in (("center", per_layer), ("top_down", cutoff)):
            sweep = Sweep(window=1, style=style)
            clean, probs = knocked(planted, sample, "language_video", sweep)["video -> language"]
            answer = int(clean.argmax())
            moved = (probs - clean).abs().amax(-1)
            outside = [k for k in range(LAYERS) if k not in QUERY_READS_VIDEO]
            if style == "center":
                assert float(moved[outside].max()) < 1e-6, moved
            else:
                assert float(moved[6:].max()) < 1e-6, moved
            out.append(100 * (probs[:, answer] - clean[answer]) / clean[answer])
    per_layer_mean = torch.stack(per_layer).mean(0)
    cutoff_mean = torch.stack(cutoff).mean(0)
    assert float(per_layer_mean[list(QUERY_READS_VIDEO)].min()) < -5, per_layer_mean
    assert float(cutoff_mean[:5].max()) < -5, cutoff_mean


def test_the_study_pass_writes_a_store_per_cut_in_either_setting(planted, tmp_path):
    """recipes/empirical_study.py in the cutoff setting: one store per recipe, each holding the
    plain hooks' numbers (one sample, its language-to-video curve)."""
    recipes = load_recipes("empirical_study")
    assert [r.name for r in recipes] == ["cross_frame", "within_frame", "language_video"]
    options = RunOptions(
        model="planted",
        limit=1,
        sweep=Sweep(style="top_down"),
        out=tmp_path / "cutoff",
        plot=False,
    )
    run(recipes, options, loaded=planted)
    ds = open_cube(tmp_path / "cutoff" / "language_video.zarr").load()
    assert ds.attrs["window_style"] == "top_down"
    sample = read_samples(EMBEDDED_DATA)[0]
    prepared = planted.adapter.prepare(planted, sample, read_frames(sample.video, 8))
    cut = by_hand("video -> language", prepared.layout)
    clean = plain_probs(planted.model, prepared.inputs, {})
    answer = int(clean.argmax())
    curve = ds["rel_change_pred"].sel(source="video", target="language").values[0]
    for layer in (0, 4, 6):
        want = plain_probs(planted.model, prepared.inputs, {k: cut for k in range(layer, LAYERS)})
        rel = 100 * (want[answer] - clean[answer]) / clean[answer]
        assert abs(float(curve[layer]) - float(rel)) < 1e-3, (layer, curve[layer], rel)
    for name in ("cross_frame", "within_frame"):
        assert (tmp_path / "cutoff" / f"{name}.zarr").is_dir()
