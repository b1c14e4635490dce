"""The intervention API against plain PyTorch forward hooks written here (no flowtrace code in
the reference), fp32 on CPU, to 1e-5: every kind, a mixed list in one call, the shipped example
programs, a program that raises, a program reading attention under sdpa, and what a program may
return."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from flowtrace.data import SampleError, read_samples, sample_frames
from flowtrace.engine import FastEngine
from flowtrace.interventions import Ablate, Cut, Patch, Steer
from flowtrace.kinds.common import Step
from flowtrace.kinds.program import ProgramMeasure
from flowtrace.models import load_model
from flowtrace.pipeline.options import resolve_data
from flowtrace.program import Trace
from flowtrace.recipe import TraceProgram, load_recipe

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def planted():
    return load_model("toy", device="cpu", dtype="float32")  # trained, dense: every cut moves it


@pytest.fixture(scope="module")
def data():
    return read_samples(resolve_data("toy"))


def trace_for(loaded, sample, data) -> Trace:
    prepared = loaded.adapter.prepare(loaded, sample, sample_frames(sample, 8))
    engine = FastEngine(loaded)
    probs = engine.clean(prepared.inputs)
    answer = int(probs.argmax())
    return Trace(
        sample, prepared.inputs, prepared.layout, loaded, answer, 0, probs, 8, 0, engine, data
    )


@pytest.fixture(scope="module")
def t(planted, data):
    sample = next(s for s in data if s.task == "Moving Direction")
    return trace_for(planted, sample, data)


# -- the reference: Hugging Face modules and forward hooks alone ------------------------------


def module(model, site: str, layer: int):
    block = model.get_decoder().layers[layer]
    return {"residual": block, "attention": block.self_attn, "mlp": block.mlp}[site]


def output_of(model, inputs, site: str, layer: int) -> torch.Tensor:
    """(T, d) a module's output in a plain forward."""
    kept = {}

    def keep(mod, args, output):
        kept["x"] = (output[0] if isinstance(output, tuple) else output)[0].clone()

    handle = module(model, site, layer).register_forward_hook(keep)
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    return kept["x"]


def plain_probs(model, inputs, edits=(), cuts=None) -> torch.Tensor:
    """p(next token) with `edits` [(site, layer, positions, fn(old) -> new)] written by forward
    hooks and `cuts` {layer: [(queries, keys)]} forbidden by a hand-built additive mask."""
    handles = []
    for site, layer, positions, fn in edits:

        def hook(mod, args, output, positions=positions, fn=fn):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden[0, positions] = fn(hidden[0, positions])
            return output

        handles.append(module(model, site, layer).register_forward_hook(hook))
    seq_len = inputs["input_ids"].shape[1]
    for layer, pairs in (cuts or {}).items():

        def swap(mod, args, kwargs, pairs=pairs):
            # The model's own mask (the planted toy's routes) minus the cut pairs.
            own = kwargs.get("attention_mask")
            if own is None:
                own = (1.0 - torch.ones(seq_len, seq_len).tril()) * torch.finfo(model.dtype).min
                own = own[None, None]
            elif own.dtype == torch.bool:
                own = torch.zeros(own.shape).masked_fill(~own, torch.finfo(model.dtype).min)
            mask = own.clone()
            for queries, keys in pairs:
                mask[..., torch.as_tensor(queries)[:, None], torch.as_tensor(keys)] = torch.finfo(
                    model.dtype
                ).min
            kwargs["attention_mask"] = mask
            return args, kwargs

        attention = module(model, "attention", layer)
        handles.append(attention.register_forward_pre_hook(swap, with_kwargs=True))
    try:
        with torch.no_grad():
            return model(**inputs).logits[0, -1].float().softmax(-1)
    finally:
        for h in handles:
            h.remove()


# -- every kind, and a mixed list in one call ---------------------------------------------------


def test_every_intervention_kind_equals_plain_hooks(t, planted):
    model, layout, last = planted.model, t.layout, planted.num_layers - 1
    reversed_frames = t.frames[::-1].copy()
    cf_inputs = t.prepare(reversed_frames).inputs
    donors = [t.prepare(sample_frames(d, 8)).inputs for d in t.donors(4)]
    source = t.capture(reversed_frames)
    vector = torch.linspace(-3, 3, model.config.get_text_config().hidden_size)
    pos = {g: layout[g] for g in ("video", "frame_7", "query", "question", "last", "frame_2")}
    video, query = pos["video"], pos["query"]

    def const(value):  # computed now: a forward inside a hook would run the hooks again
        return lambda _: value

    def mean_of(site, layer, positions):
        return torch.stack([output_of(model, d, site, layer)[positions] for d in donors]).mean(0)

    # (intervention, plain edits, plain cuts)
    cases = [
        (Ablate("residual", "video", 2), [("residual", 2, video, torch.zeros_like)], None),
        (
            Ablate("attention", "frame_7", 3),
            [("attention", 3, pos["frame_7"], torch.zeros_like)],
            None,
        ),
        (Ablate("mlp", "query", 1), [("mlp", 1, query, torch.zeros_like)], None),
        (
            Patch("residual", "frame_7", 1, source),
            [
                (
                    "residual",
                    1,
                    pos["frame_7"],
                    const(output_of(model, cf_inputs, "residual", 1)[pos["frame_7"]]),
                )
            ],
            None,
        ),
        (
            Patch("attention", "query", 5, source),
            [("attention", 5, query, const(output_of(model, cf_inputs, "attention", 5)[query]))],
            None,
        ),
        (
            Patch("mlp", "frame_7", 2, source),
            [
                (
                    "mlp",
                    2,
                    pos["frame_7"],
                    const(output_of(model, cf_inputs, "mlp", 2)[pos["frame_7"]]),
                )
            ],
            None,
        ),
        (
            Ablate("mlp", "frame_7", 2, how="mean"),
            [("mlp", 2, pos["frame_7"], const(mean_of("mlp", 2, pos["frame_7"])))],
            None,
        ),
        (
            Ablate("attention", "frame_7", 3, how="resample"),
            [
                (
                    "attention",
                    3,
                    pos["frame_7"],
                    const(output_of(model, donors[0], "attention", 3)[pos["frame_7"]]),
                )
            ],
            None,
        ),
        (
            Steer("residual", "query", 4, add=vector),
            [("residual", 4, query, lambda x: x + vector)],
            None,
        ),
        (Steer("mlp", "last", 6, scale=-2.0), [("mlp", 6, pos["last"], lambda x: -2.0 * x)], None),
        (
            Steer("attention", "question", 5, add=vector, scale=0.5),
            [("attention", 5, pos["question"], lambda x: 0.5 * x + vector)],
            None,
        ),
        (
            Ablate("residual", "last", last),
            [("residual", last, pos["last"], torch.zeros_like)],
            None,
        ),
        (Cut("video -> query", range(2, 6)), [], {k: [(query, video)] for k in range(2, 6)}),
        (
            (
                Cut("frame_7 -> query", [3, 4]),
                Ablate("residual", "frame_2", 0),
                Steer("mlp", "last", 6, scale=3.0),
            ),
            [
                ("residual", 0, pos["frame_2"], torch.zeros_like),
                ("mlp", 6, pos["last"], lambda x: 3.0 * x),
            ],
            {k: [(query, pos["frame_7"])] for k in (3, 4)},
        ),
        (
            Ablate("residual", ["video"][0], range(1, 3)),
            [("residual", 1, video, torch.zeros_like), ("residual", 2, video, torch.zeros_like)],
            None,
        ),
    ]
    engine = t.engine
    checked = engine.checked_rows
    got = t.run([c for c, _, _ in cases]).probs
    assert engine.used == {"fast"}  # the shortcut ran, and the self-check confirmed it
    assert engine.checked_rows > checked
    clean = t.clean_probs
    moved = 0
    for i, (condition, edits, cuts) in enumerate(cases):
        want = plain_probs(model, t.inputs, edits, cuts)
        gap = float((got[i] - want).abs().max())
        assert gap < TOLERANCE, (i, condition, gap)
        # The toy is confident, so effects show in the small probabilities: compare log p,
        # where the recompute must agree to 1e-3 and the intervention move it by far more.
        log_gap = float((got[i].log() - want.log()).abs().max())
        assert log_gap < 1e-3, (i, condition, log_gap)
        moved += float((want.log() - clean.log()).abs().max()) > 0.1
    # Most cases change the distribution 100x beyond the tolerance (a few touch tokens the toy
    # hardly reads at that layer, and are still checked to 1e-3 in log p).
    assert moved >= 10, moved


def test_a_broken_edit_is_caught_by_the_self_check(planted, data, monkeypatch):
    """The runtime self-check covers edits: a recompute that writes the wrong value falls back
    to the reference path (which still gives the right numbers), loudly."""
    from flowtrace.engine import fast, suffix

    sample = next(s for s in data if s.task == "Moving Direction")
    t = trace_for(planted, sample, data)
    fast.VERIFIED.clear()
    real = suffix.apply_edits

    def wrong(hidden, edits):
        real(hidden, edits)
        for _, row, positions, _, _ in edits:
            hidden[row, positions] *= -5

    monkeypatch.setattr(fast, "apply_edits", wrong)
    steer = Steer("residual", "video", 1, scale=2.0)
    with pytest.warns(fast.FastEngineFallback, match="site edits"):
        got = t.run([steer]).probs[0]
    want = plain_probs(
        planted.model, t.inputs, [("residual", 1, t.layout["video"], lambda x: 2.0 * x)]
    )
    assert float((got - want).abs().max()) < TOLERANCE
    assert t.engine.used == {"reference"}


def eager_weights(model, inputs) -> tuple[torch.Tensor, ...]:
    """Per layer (1, heads, T, T): the attention weights of a plain eager forward."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(**inputs, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")


def test_attention_mass_under_sdpa_equals_eager_weights(t, planted):
    assert planted.model.config._attn_implementation == "sdpa"
    frames = t.frame_groups
    got = t.attention_mass(["last", "query"], frames, layers=[1, 5])
    weights = eager_weights(planted.model, t.inputs)
    assert planted.model.config._attn_implementation == "sdpa"
    for layer in (1, 5):
        w = weights[layer][0].float()  # (heads, T, T)
        for target in ("last", "query"):
            for frame in frames:
                q, k = t.layout[target], t.layout[frame]
                want = w[:, q][:, :, k].sum(-1).mean(-1)
                have = got.sel(layer=layer, target=target, source=frame).values
                np.testing.assert_allclose(have, want.numpy(), atol=TOLERANCE)


# -- the shipped example programs ---------------------------------------------------------------


def run_program(recipe, t: Trace, loaded, data) -> dict:
    measure = ProgramMeasure(recipe, loaded, 8, data, 0)
    return dict(measure.run_on(t))


def test_frame_mlp_ablation_program_equals_plain_hooks(t, planted, data):
    recipe = load_recipe(RECIPES / "frame_mlp_ablation.py")
    out = run_program(recipe, t, planted, data)["p_answer"]
    assert out.dims == ("layer", "frame")
    donors = [t.prepare(sample_frames(d, 8)).inputs for d in t.donors(4)]
    for layer, frame in [(0, "frame_0"), (2, "frame_7"), (5, "frame_3")]:
        positions = t.layout[frame]
        mean = torch.stack(
            [output_of(planted.model, d, "mlp", layer)[positions] for d in donors]
        ).mean(0)
        want = plain_probs(
            planted.model, t.inputs, [("mlp", layer, positions, lambda _, m=mean: m)]
        )
        got = float(out.sel(frame=frame).values[layer])
        assert abs(got - float(want[t.answer_id])) < TOLERANCE, (layer, frame)


def test_frame_attention_mass_program_marks_the_dominant_frame(t, planted, data):
    recipe = load_recipe(RECIPES / "frame_attention_mass.py")
    out = run_program(recipe, t, planted, data)
    mass, anchor = out["attention_mass"], out["anchor_frame"]
    assert mass.dims == ("layer", "target", "frame")
    weights = eager_weights(planted.model, t.inputs)
    q = t.layout["last"]
    per_frame = torch.stack(
        [weights[4][0][:, q][:, :, t.layout[f]].sum(-1).mean(-1).mean(0) for f in t.frame_groups]
    )
    np.testing.assert_allclose(mass.sel(target="last").values[4], per_frame.numpy(), atol=TOLERANCE)
    assert int(anchor.sel(target="last").values[4]) == int(per_frame.argmax())


# -- what a program may do and return -----------------------------------------------------------


def step_for(t: Trace, record) -> Step:
    class Clean:
        pred, true_id, probs = t.answer_id, t.true_id, t.clean_probs

    class Prepared:
        inputs, layout = t.inputs, t.layout

    return Step(t.sample, t.engine, Prepared(), Clean(), record, None, None)


def program_measure(fn, planted, data, **kw) -> ProgramMeasure:
    return ProgramMeasure(TraceProgram("p", "p", fn, **kw), planted, 8, data, 0)


def record():
    from flowtrace.store.cube import Schema

    return Schema({}, {}).empty("s")


def test_programs_run_under_inference_mode_unless_they_ask_for_gradients(t, planted, data):
    seen = {}

    def program(t):
        seen["inference"] = torch.is_inference_mode_enabled()
        return {"x": ((), 1.0)}

    program_measure(program, planted, data).fill(step_for(t, record()))
    program_measure(program, planted, data, gradients=True).fill(step_for(t, record()))
    assert seen["inference"] is False
    program_measure(program, planted, data).fill(step_for(t, record()))
    assert seen["inference"] is True


def test_a_raising_program_fails_the_sample_with_its_own_line(t, planted, data, tmp_path):
    source = tmp_path / "raises.py"
    source.write_text(
        "from flowtrace.program import TraceProgram\n\n"
        "def boom(t):\n"
        "    return {'x': ((), 1 / 0)}\n\n"
        "recipe = TraceProgram('boom', 'raises', boom)\n"
    )
    recipe = load_recipe(source)
    measure = ProgramMeasure(recipe, planted, 8, data, 0)
    with pytest.raises(SampleError, match=r"ZeroDivisionError.*raises\.py, line 4: return"):
        measure.fill(step_for(t, record()))


def test_a_save_pitfall_is_named_with_what_to_write(t, planted, data):
    def program(t):
        raise UnboundLocalError("cannot access local variable 'x' where it is not associated")

    with pytest.raises(SampleError, match=r"nnsight\.save\(\[\]\)"):
        program_measure(program, planted, data).fill(step_for(t, record()))


def test_results_are_never_cast_silently(t, planted, data):
    values = iter([np.arange(3), np.array([0.5, 1.0, 2.0])])
    measure = program_measure(lambda t: {"x": (("k",), next(values))}, planted, data)
    first = record()
    measure.fill(step_for(t, first))
    assert first.values["x"].dtype == np.int64
    with pytest.raises(SampleError, match="fractional"):
        measure.fill(step_for(t, record()))
    for bad, match in [
        ({"status": ((), 1.0)}, "may not be named 'status'"),
        ({"task": ((), 1.0)}, "may not be named 'task'"),
        ({"x": (("k",), np.array([object(), object()]))}, "not strings|cannot hold"),
    ]:
        with pytest.raises(SampleError, match=match):
            program_measure(lambda t, bad=bad: bad, planted, data).fill(step_for(t, record()))


def test_donors_do_not_depend_on_the_runs_subset(planted, data):
    sample = next(s for s in data if s.task == "Moving Direction")
    everything = trace_for(planted, sample, data)
    again = trace_for(planted, sample, list(reversed(data)))
    assert [d.id for d in everything.donors(3)] == [d.id for d in again.donors(3)]
    assert all(str(d.video) != str(sample.video) for d in everything.donors(3))


def test_a_static_video_reversed_is_marked_and_left_out_of_flip_rates(t):
    """A counterfactual equal to the clean video measures nothing: marked, and the figure's flip
    rate counts only the other samples (hand-built cube: 1 of 2 counted samples flips)."""
    import xarray as xr

    from flowtrace.patching import counterfactual
    from flowtrace.plots.patching import patching_chart

    static = dataclasses.replace(t, scratch={})  # its own frames: a static clip
    static.__dict__["frames"] = np.repeat(t.frames[:1], len(t.frames), axis=0)
    assert counterfactual(static, "reversed").same_as_clean
    assert not counterfactual(t, "reversed").same_as_clean
    shape = (3, 1, 1, 1, 1)
    dims = ("sample", "counterfactual", "site", "layer", "group")
    ds = xr.Dataset(
        {
            "flipped": (dims, np.array([True, True, False]).reshape(shape)),
            "p_clean_answer": (dims, np.full(shape, 0.5)),
            "clean_prob_pred": (("sample",), np.full(3, 0.9)),
            "same_as_clean": (("sample", "counterfactual"), np.array([[True], [False], [False]])),
            "status": (("sample",), np.array(["ok"] * 3)),
        },
        coords={"counterfactual": ["reversed"], "site": ["residual"], "layer": [0], "group": ["q"]},
        attrs={"recipe": "counterfactual_patch"},
    )
    spec = patching_chart(ds, "t").to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert rows[0]["flip_rate"] == pytest.approx(0.5)  # not 2/3: the static sample is left out


def test_a_programs_donor_pool_is_all_of_the_data_whatever_the_subset(planted, data):
    """The run's subset (--limit, --task) does not reach the donor pool: a sample's donor is the
    same in every run of the data."""
    from types import SimpleNamespace

    from flowtrace.pipeline.kinds import KINDS
    from flowtrace.runner import RunOptions

    recipe = load_recipe(RECIPES / "frame_mlp_ablation.py")
    subset = [s for s in data if s.task == "Moving Direction"][:2]
    options = RunOptions(tasks=["Moving Direction"], limit=2)
    measure = KINDS[TraceProgram].measure(
        recipe, planted, options, SimpleNamespace(frames=8, sweep=None), subset
    )
    assert [s.id for s in measure.samples] == [s.id for s in data]
