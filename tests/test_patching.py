"""Counterfactual patching: the patch itself against plain PyTorch forward hooks, and what the
planted toy's routes say a patch must do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from adapters_fixtures import build_qwen

from flowtrace.data import read_samples, sample_frames
from flowtrace.engine import FastEngine
from flowtrace.engine.suffix import Row, first_blocked_query
from flowtrace.interventions import Patch
from flowtrace.models import load_model
from flowtrace.models.family_templates import EVAL_MVBENCH_CHATML
from flowtrace.patching import counterfactual
from flowtrace.pipeline.options import resolve_data
from flowtrace.program import Trace
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube

pytestmark = pytest.mark.slow
QWEN_MEDIA = "<|vision_start|><|video_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def planted():
    return load_model("planted", device="cpu", dtype="float32")


def trace_of(loaded, sample) -> Trace:
    prepared = loaded.adapter.prepare(loaded, sample, sample_frames(sample, 8))
    return Trace(sample, prepared.inputs, prepared.layout, loaded, 0, 0, torch.zeros(1), 8, 0)


def plain_patch(model, clean_inputs, cf_inputs, site: str, layer: int, positions) -> torch.Tensor:
    """The patch with forward hooks on the Hugging Face modules alone: capture the counterfactual
    activation, then overwrite it in the clean forward. Next-token probabilities (V,)."""
    decoder = model.get_decoder()
    module = decoder.layers[layer] if site == "residual" else decoder.layers[layer].self_attn
    saved = {}

    def keep(mod, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        saved["value"] = hidden[0, positions].clone()

    def put(mod, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[0, positions] = saved["value"]
        return output

    with torch.no_grad():
        handle = module.register_forward_hook(keep)
        model(**cf_inputs)
        handle.remove()
        handle = module.register_forward_hook(put)
        logits = model(**clean_inputs).logits[0, -1]
        handle.remove()
    return logits.float().softmax(-1)


def reversed_inputs(t: Trace) -> dict:
    return t.prepare(counterfactual(t, "reversed").frames).inputs


def test_patching_equals_plain_forward_hooks(planted):
    sample = read_samples(resolve_data("toy"), tasks=["Moving Direction"], limit=1)[0]
    t = trace_of(planted, sample)
    cf = reversed_inputs(t)
    source = t.capture(counterfactual(t, "reversed").frames)
    last = len(t.layers) - 1
    cases = [
        ("residual", 0, "frame_3"),
        ("residual", 5, "query"),
        ("residual", last, "last"),  # after the last layer: the final stream itself
        ("residual", last, "video"),
        ("attention", 2, "frame_7"),
        ("attention", 6, "last"),
        ("attention", 0, "options"),
    ]
    got = t.run([Patch(site, g, layer, source) for site, layer, g in cases]).probs
    clean = planted.model(**t.inputs).logits[0, -1].float().softmax(-1).detach()
    moved = 0
    for (site, layer, group), a in zip(cases, got, strict=True):
        want = plain_patch(planted.model, t.inputs, cf, site, layer, t.layout[group])
        assert (a - want).abs().max() < 1e-5, (site, layer, group)
        moved += float((want - clean).abs().max()) > 1e-2
    assert moved >= 3  # the patches checked change the answer distribution, not only noise
    assert t.scratch["engine"].used == {"fast"}


def test_a_patch_enters_its_row_and_edits_its_attention_at_a_middle_layer(planted):
    """Each patch kind against plain hooks, at a tolerance far below what it moves: a residual
    patch (the row enters layer l + 1 with the patched stream) and an attention patch (layer l's
    attention output edited in the recompute), in one batch with rows entering at different
    layers. The pass's engine compiles its layers; attention edits run them eagerly."""
    sample = read_samples(resolve_data("toy"), tasks=["Moving Direction"], limit=1)[0]
    t = trace_of(planted, sample)
    t.engine = FastEngine(planted, compile=True)
    cf = reversed_inputs(t)
    source = t.capture(counterfactual(t, "reversed").frames)
    cases = [
        ("attention", 5, "query"),  # the last token reads the query's reversed direction
        ("residual", 2, "query"),  # same group (one batch), entering two layers earlier
        ("residual", 4, "frame_7"),  # the query reads frame_7 in layer 5
        ("attention", 2, "frame_7"),
    ]
    clean = t.engine.clean(t.inputs)
    got = t.run([(Patch(site, g, layer, source)) for site, layer, g in cases]).probs
    tolerance = 1e-5
    for (site, layer, group), row in zip(cases, got, strict=True):
        want = plain_patch(planted.model, t.inputs, cf, site, layer, t.layout[group])
        assert (row - want).abs().max() < tolerance, (site, layer, group)
        if group == "frame_7" or layer == 5:  # the patches that carry the direction
            assert (want - clean).abs().max() > 1e4 * tolerance, (site, layer, group)
    assert t.engine.used == {"fast"}


@pytest.fixture(scope="module")
def qwen3_vl(tiny_data, tmp_path_factory):
    """A random tiny Qwen3-VL: DeepStack adds visual features to the stream after layers 0, 1."""
    samples = read_samples(tiny_data)
    prompts = [EVAL_MVBENCH_CHATML.render(s, QWEN_MEDIA).text for s in samples]
    with torch.random.fork_rng():  # seeded: the features' effect checked below is this model's
        torch.manual_seed(0)
        path = build_qwen(tmp_path_factory.mktemp("qwen3_vl"), prompts, "3")
    loaded = load_model(str(path), device="cpu", dtype="float32")
    sample = read_samples(tiny_data, tasks=["Moving Direction"])[0]
    prepared = loaded.adapter.prepare(loaded, sample, sample_frames(sample, 8, loaded.adapter))
    return Trace(sample, prepared.inputs, prepared.layout, loaded, 0, 0, torch.zeros(1), 8, 0)


def test_a_residual_patch_enters_with_deepstack_features_added(qwen3_vl):
    """A residual patch at a DeepStack layer: the next layer's input is the patched output plus
    the clean run's visual features there, as with a hook on the Hugging Face layer."""
    t = qwen3_vl
    t.engine = FastEngine(t.loaded)
    t.engine.clean(t.inputs)
    cf = reversed_inputs(t)
    source = t.capture(counterfactual(t, "reversed").frames)
    video = t.layout["video"]
    clean = t.engine.capture(t.inputs)
    assert clean.deltas[0] is not None and bool(clean.deltas[0][0, video].any())
    patch = Patch("residual", "video", 0, source)
    want = plain_patch(t.loaded.model, t.inputs, cf, "residual", 0, video)
    tolerance = 1e-5
    got = t.run([patch]).probs[0]
    assert (got - want).abs().max() < tolerance
    delta, clean.deltas[0] = clean.deltas[0], None  # the features left out: the test must see it
    try:
        (condition,) = t.conditions([patch])
        row = Row(0, condition, first_blocked_query(condition), condition.entry)
        without = t.engine._recompute(clean, [row], False)
    finally:
        clean.deltas[0] = delta
    assert (without[0] - want).abs().max() > 100 * tolerance


@pytest.fixture(scope="module")
def reversed_direction(planted, tmp_path_factory):
    """counterfactual_patch on the planted toy's Moving Direction samples."""
    out = tmp_path_factory.mktemp("patch") / "cfp.zarr"
    options = RunOptions(model="planted", tasks=["Moving Direction"], limit=6, out=out, plot=False)
    run(load_recipe("counterfactual_patch"), options, loaded=planted)
    ds = open_cube(out)
    assert (ds["status"].values == "ok").all()
    return ds


def flipping(ds):
    """The samples whose answer the reversed video flips (left <-> right, up <-> down)."""
    answers = ds["counterfactual_answer"].sel(counterfactual="reversed").values
    return ds.isel(sample=answers != ds["clean_pred"].values)


def test_reversing_frames_flips_moving_direction(reversed_direction):
    assert flipping(reversed_direction).sizes["sample"] >= 5  # of 6


def test_the_query_carries_the_direction_after_reading_the_last_frame(reversed_direction):
    """The plant: the query reads frame_7 in layers 2-5, the last token reads the query in 4-7.
    Patched after layer 5, the query hands the reversed direction to the last token."""
    r = flipping(reversed_direction).sel(counterfactual="reversed", site="residual")
    flips = r["flipped"].sel(group="query").mean("sample").values
    assert flips[5] >= 0.75, flips
    # Before layer 5 the query reads frame_7 again and overwrites the patch.
    assert flips[:4].max() <= 0.25, flips


def test_video_is_read_by_nothing_after_layer_5(reversed_direction):
    ds = reversed_direction
    r = ds.sel(counterfactual="reversed", site="residual")
    change = np.abs(r["p_clean_answer"] - ds["clean_prob_pred"]).sel(group="video")
    assert change.sel(layer=slice(5, None)).max() < 1e-6
    assert change.sel(layer=3).max() > 0.1  # where it is read, the patch moves the answer


def test_early_frames_act_only_through_frames_that_reach_the_last_frame(reversed_direction):
    """Frames talk only in layers 0-3 and the query reads frame_7 alone: after layer 3 no frame
    before frame_7 can reach it, so patching them there changes nothing; frame_7 does."""
    ds = reversed_direction
    r = ds.sel(counterfactual="reversed", site="residual", layer=3)
    change = np.abs(r["p_clean_answer"] - ds["clean_prob_pred"])
    early = [f"frame_{k}" for k in range(7)]
    assert float(change.sel(group=early).max()) < 1e-6
    flipped = ds["sample"].isin(flipping(ds)["sample"]).values
    assert float(change.isel(sample=flipped).sel(group="frame_7").min()) > 0.1
    at_0 = np.abs(
        ds.sel(counterfactual="reversed", site="residual", layer=0)["p_clean_answer"]
        - ds["clean_prob_pred"]
    )
    assert float(at_0.sel(group="frame_0").max()) > 1e-3  # early on, frame_0 reaches frame_7


def test_own_recipe_example_from_the_readme_runs(tmp_path: Path, planted):
    """The README's trace-program example, run as a user would, against plain hooks."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- own-recipe -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) < 30
    recipe_file = tmp_path / "group_ablation.py"
    recipe_file.write_text(block)
    out = tmp_path / "ga.zarr"
    options = RunOptions(model="planted", limit=2, out=out, plot=False, sample_mode="all")
    run(load_recipe(recipe_file), options, loaded=planted)
    ds = open_cube(out)
    groups = list(ds["group"].values)
    sample = read_samples(resolve_data("toy"), limit=1)[0]
    t = trace_of(planted, sample)
    answer = int(planted.model(**t.inputs).logits[0, -1].argmax())
    decoder = planted.model.get_decoder()
    for layer in (1, 6):
        for group in groups:
            positions = t.layout[group]

            def zero(mod, args, output, positions=positions):
                hidden = output[0] if isinstance(output, tuple) else output
                hidden[0, positions] = 0
                return output

            handle = decoder.layers[layer].register_forward_hook(zero)
            with torch.no_grad():
                p = planted.model(**t.inputs).logits[0, -1].float().softmax(-1)[answer]
            handle.remove()
            got = float(ds["p_answer"].sel(layer=layer, group=group).values[0])
            assert abs(got - float(p)) < 1e-5, (layer, group)


def test_the_patching_store_draws_its_own_figure(reversed_direction):
    """A trace program names its figure (`chart`): flip rates, layer by group, per
    counterfactual and site, from the store alone."""
    from flowtrace.plots import chart_for

    ds = reversed_direction
    assert ds.attrs["chart"] == "counterfactual_patch"
    spec = chart_for(ds).to_dict()
    rows = spec["datasets"][next(iter(spec["datasets"]))]
    key = ("reversed", "residual", 5, "query")
    cell = next(r for r in rows if (r["counterfactual"], r["site"], r["layer"], r["group"]) == key)
    want = ds["flipped"].sel(counterfactual="reversed", site="residual", layer=5, group="query")
    assert cell["flip_rate"] == pytest.approx(float(want.mean()))


def test_the_readme_program_runs_through_a_simulated_server(tmp_path: Path, planted):
    """Its traces serialise: the same cube through nnsight's simulated server as locally."""
    from flowtrace.engine import remote

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- own-recipe -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    recipe_file = tmp_path / "group_ablation.py"
    recipe_file.write_text(block)
    cubes = []
    for serve in (None, remote.SIMULATED):
        out = tmp_path / f"{serve}.zarr"
        options = RunOptions(model="planted", limit=1, out=out, plot=False, serve=serve)
        run(load_recipe(recipe_file), options, loaded=planted)
        cubes.append(open_cube(out))
    local, served = cubes
    assert served.attrs["traces"] == "simulated-server"
    np.testing.assert_allclose(served["p_answer"].values, local["p_answer"].values, atol=1e-6)
