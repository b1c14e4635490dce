"""A model with planted routes: its masks are the rules, and every analysis respects them.

The model is random (tiny, 8 layers, the shipped ROUTES); what is checked is the plant's
construction and that knockouts, both engines and the runner compose with a model's own masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flowtrace.data import read_frames, read_samples
from flowtrace.engine import FastEngine, KnockoutCondition, ReferenceEngine
from flowtrace.errors import FlowtraceError
from flowtrace.models import load_model
from flowtrace.models.planted import ROUTES, PlantedLlavaNextVideo, layout_from_groups
from flowtrace.models.prompt_template import EVAL_MVBENCH
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.tokens.edges import blocked_edges
from flowtrace.tokens.sweep import Sweep

LAYERS = 8
KNOCKOUT_RECIPES = ("cross_frame", "vql_to_ql", "question_options_to_last", "vq_to_true_option")


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    return build_planted(tmp_path_factory.mktemp("planted"), tiny_data)


def build_planted(out: Path, tiny_data: Path) -> Path:
    """A random planted model with the shipped ROUTES, saved as a checkpoint in `out`."""
    from flowtrace.toy.build import build_config, build_processor, build_tokenizer

    prompts = [EVAL_MVBENCH.render(s, "<video>").text for s in read_samples(tiny_data)]
    tokenizer = build_tokenizer(prompts)
    config = build_config(tokenizer, layers=LAYERS, hidden=64, heads=4, vision_hidden=32)
    side = config.vision_config.image_size // config.vision_config.patch_size // 2
    config.flowtrace_plant = {**ROUTES, "video_grid": [8, side, side]}
    torch.manual_seed(0)
    model = PlantedLlavaNextVideo(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # a random head is flat; make knockouts visible
    model.save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def loaded(planted_dir: Path):
    return load_model(str(planted_dir), device="cpu", dtype="float32", attn="sdpa")


@pytest.fixture(scope="module")
def prepared(loaded, tiny_data: Path):
    sample = read_samples(tiny_data, tasks=["Object Count"])[0]
    return loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))


def test_layer_masks_are_the_rules(loaded, prepared):
    """Spot checks against the layout's own groups, written from the rules' prose."""
    assert isinstance(loaded.model, PlantedLlavaNextVideo)
    layout = prepared.layout
    masks = loaded.model.layer_masks(prepared.inputs["token_groups"])
    open_ = [m[0, 0] == 0 for m in masks]  # (T, T) True where attention may flow
    last, query = layout["last"][0], layout["query"]
    frame = [layout[f"frame_{t}"] for t in range(8)]

    def edges(layer, queries, keys):
        return open_[layer][np.ix_(np.atleast_1d(queries), np.atleast_1d(keys))]

    assert not edges(3, last, query).any() and edges(4, last, query).all()
    assert edges(2, frame[5], frame[3]).all() and not edges(5, frame[5], frame[3]).any()
    assert not any(edges(layer, query, frame[0]).any() for layer in range(LAYERS))
    assert edges(3, query, frame[7]).all() and not edges(6, query, frame[7]).any()
    assert not any(edges(layer, last, layout["video"]).any() for layer in range(LAYERS))
    assert not any(edges(layer, layout["prompt_tail"], query).any() for layer in range(LAYERS))
    # The plant only removes edges: what it leaves is causal, and each token sees itself.
    causal = torch.ones(layout.seq_len, layout.seq_len, dtype=torch.bool).tril()
    assert all(bool((o <= causal).all()) and bool(o.diagonal().all()) for o in open_)


def test_planted_model_refuses_inputs_without_roles(loaded, prepared):
    inputs = {k: v for k, v in prepared.inputs.items() if k != "token_groups"}
    with pytest.raises(ValueError, match="token_groups"):
        loaded.model(**inputs)


@pytest.mark.parametrize("engine", [ReferenceEngine, FastEngine])
def test_forbidden_edges_change_nothing(engine, loaded, prepared):
    """Cutting what the plant already cut, layer by layer, leaves the answer exactly as it was."""
    runner = engine(loaded)
    clean = runner.clean(prepared.inputs)
    # The plant's own view of the sequence: it names the tokens of no group "other".
    codes = prepared.inputs["token_groups"][0].numpy()
    layout = layout_from_groups(codes, prepared.layout.video_grid)
    conditions = []
    for rule in ROUTES["rules"]:
        blocked = torch.from_numpy(blocked_edges(rule["edges"], layout))
        conditions += [KnockoutCondition({layer: blocked}) for layer in rule["layers"]]
    conditions.append(KnockoutCondition({layer: blocked for layer in range(LAYERS)}))
    probs = runner.knockout(prepared.inputs, conditions)
    assert float((probs - clean).abs().max()) < 1e-6


@pytest.mark.parametrize("style", ["center", "inverse"])
def test_fast_engine_equals_reference_on_planted_model(style, loaded, prepared):
    reference, fast = ReferenceEngine(loaded, batch_size=16), FastEngine(loaded)
    fast.clean(prepared.inputs)
    for name in KNOCKOUT_RECIPES:
        knockouts = [
            c.knockout
            for c in load_recipe(name).conditions(
                prepared.layout, LAYERS, Sweep(window=3, style=style)
            )
        ]
        want = reference.knockout(prepared.inputs, knockouts)
        got = fast.knockout(prepared.inputs, knockouts)
        assert float((got - want).abs().max()) <= 1e-5, name
    assert fast.used == {"fast"}


def test_knockout_curves_stay_inside_planted_routes(loaded, prepared):
    """Single-layer knockouts move the answer only where the plant leaves the edge open."""
    fast = FastEngine(loaded)
    clean = fast.clean(prepared.inputs)
    open_layers = {
        ("cross_frame", "earlier_frames", "frame"): range(0, 4),
        ("vql_to_ql", "video", "question"): range(2, 6),
        ("vql_to_ql", "video", "last"): range(0),
        ("vql_to_ql", "question", "last"): range(4, 8),
    }
    for (name, source, target), layers in open_layers.items():
        conditions = [
            c
            for c in load_recipe(name).conditions(prepared.layout, LAYERS, Sweep(window=1))
            if (c.source, c.target) == (source, target)
        ]
        moved = fast.knockout(prepared.inputs, [c.knockout for c in conditions])
        effect = (moved - clean).abs().amax(-1)
        for c, e in zip(conditions, effect.tolist(), strict=True):
            if c.layer not in layers:
                assert e < 1e-6, f"{source} -> {target} moved the answer at closed layer {c.layer}"
        if len(layers):
            assert max(effect.tolist()) > 1e-5, f"{source} -> {target} should matter somewhere"


def test_runner_analyses_the_planted_model(planted_dir: Path, tiny_data: Path, tmp_path: Path):
    options = RunOptions(
        model=str(planted_dir), data=str(tiny_data), limit=2, sample_mode="all", plot=False
    )
    result = run(load_recipe("cross_frame"), RunOptions(**{**vars(options), "out": tmp_path / "a"}))
    ds = open_cube(result.store)
    assert result.counts["ok"] == 2
    late = ds["prob_pred"].sel(layer=[6, 7]).values  # windows 5-7 / 6-7: all planted closed
    clean = ds["clean_prob_pred"].values[:, None, None, None]
    np.testing.assert_allclose(late, np.broadcast_to(clean, late.shape), atol=1e-6)


def test_training_under_the_plant_writes_a_planted_checkpoint(tmp_path: Path):
    """`flowtrace toy train --plant` in miniature: the plant is saved in the config, loads back."""
    from flowtrace.toy.train import TrainConfig, train

    config = TrainConfig(plant=True, steps=2, batch_size=4, heldout_per_task=1, eval_every=2)
    info = train(tmp_path, config, log=lambda line: None)
    assert (tmp_path / "planted" / "training.json").exists() and "--plant" in info["command"]
    loaded = load_model(str(tmp_path / "planted"), device="cpu", dtype="float32")
    assert isinstance(loaded.model, PlantedLlavaNextVideo)
    assert loaded.model.config.flowtrace_plant["rules"] == ROUTES["rules"]


def test_worker_processes_make_the_same_batches(tmp_path: Path):
    """`--workers` only moves clip drawing into other processes: same clips, same order."""
    from flowtrace.toy.build import build_config, build_processor, build_tokenizer
    from flowtrace.toy.train import TrainConfig, _training_batches

    tokenizer = build_tokenizer(["Question : which way ? Options : ( A ) left"])
    processor = build_processor(tokenizer, 32, 4)
    model_config = build_config(tokenizer, layers=8, hidden=32, image_size=32, patch_size=4)
    model_config.flowtrace_plant = {**ROUTES, "video_grid": [8, 4, 4]}
    serial = list(_training_batches(TrainConfig(steps=2, batch_size=3), processor, model_config))
    config = TrainConfig(steps=2, batch_size=3, workers=2)
    pooled = list(_training_batches(config, processor, model_config))
    assert len(serial) == len(pooled) == 2
    for a, b in zip(serial, pooled, strict=True):
        assert a.tasks == b.tasks and torch.equal(a.targets, b.targets)
        assert all(torch.equal(x, y) for x, y in zip(a.ids, b.ids, strict=True))
        assert torch.equal(a.pixels, b.pixels) and a.groups is not None
        assert all(torch.equal(x, y) for x, y in zip(a.groups, b.groups, strict=True))


def test_generation_is_refused_on_a_planted_model(loaded, prepared):
    with pytest.raises(FlowtraceError, match="planted model"):
        ReferenceEngine(loaded).generate(prepared.inputs, [KnockoutCondition({})], 2)


def test_training_can_start_from_a_trained_checkpoint(tmp_path: Path):
    """--init: training starts from the given weights (the plant holds whatever the start: it
    is in every forward)."""
    from flowtrace.toy import EMBEDDED_MODEL
    from flowtrace.toy.train import TrainConfig, train

    config = TrainConfig(
        plant=True, steps=1, batch_size=2, heldout_per_task=1, eval_every=1, lr=0.0,
        init=str(EMBEDDED_MODEL),
    )  # fmt: skip
    info = train(tmp_path, config, log=lambda line: None)
    assert f"--init {EMBEDDED_MODEL}" in info["command"]
    record = json.loads((EMBEDDED_MODEL / "training.json").read_text())
    assert info["started_from"]["command"] == record["command"]  # the chain of runs is kept
    trained = load_model(str(tmp_path / "planted"), device="cpu", dtype="float32").model
    start = load_model("toy", device="cpu", dtype="float32").model.state_dict()
    # lr 0: the weights are the start's, under the planted class and its saved names.
    for name, tensor in trained.state_dict().items():
        assert torch.equal(tensor, start[name]), name


def test_last_frame_loss_reads_the_last_frame_where_frames_stop_interacting(loaded, prepared):
    """--last-frame-loss: the second loss's logits are the last frame's last token after layer 3
    (ROUTES lets frames read earlier frames in layers 0-3), through the final norm and LM head."""
    from flowtrace.toy.train import Batch, _frames_close, _last_logits

    assert _frames_close(loaded.model.config) == 3
    inputs = prepared.inputs
    batch = Batch(
        ids=[inputs["input_ids"][0]],
        pixels=inputs["pixel_values_videos"],
        targets=torch.tensor([0]),
        tasks=["Object Count"],
        groups=[inputs["token_groups"][0]],
    )
    with torch.no_grad():
        last, relay = _last_logits(loaded.model, batch, torch.arange(1), 0, relay_layer=3)
        out = loaded.model(**inputs, output_hidden_states=True)
        position = int(prepared.layout["frame_7"].max())
        language = loaded.model.model.language_model
        want = loaded.model.lm_head(language.norm(out.hidden_states[4][0, position]))
    torch.testing.assert_close(relay[0], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(last[0], out.logits[0, -1], atol=1e-5, rtol=0)


def test_control_cut_clips_train_under_the_cross_frame_knockout(loaded, prepared, tiny_data):
    """--control-cut: a chosen control clip's forward is the model under the cross-frame
    knockout in layers 0-3 (the ReferenceEngine's), with padding of a longer row beside it;
    unchosen rows are the clean model."""
    from flowtrace.toy.train import Batch, _control_cuts, _last_logits

    other = read_samples(tiny_data, tasks=["Object Color"])[0]
    longer = loaded.adapter.prepare(loaded, other, read_frames(other.video, 8)).inputs
    rows = [prepared.inputs, longer]
    batch = Batch(
        ids=[r["input_ids"][0] for r in rows],
        pixels=torch.cat([r["pixel_values_videos"] for r in rows]),
        targets=torch.tensor([0, 0]),
        tasks=["Object Color", "Object Color"],
        groups=[r["token_groups"][0] for r in rows],
    )
    assert len(batch.ids[1]) != len(batch.ids[0])  # padding is exercised
    config = loaded.model.config
    assert _control_cuts(batch, [False, False], config) is None
    cuts = _control_cuts(batch, [True, False], config)
    with torch.no_grad():
        logits, _ = _last_logits(loaded.model, batch, torch.arange(2), 0, extra_cuts=cuts)
    engine = ReferenceEngine(loaded)
    cut = torch.from_numpy(blocked_edges("frame[<t] -> frame[t]", prepared.layout))
    (knocked,) = engine.knockout(prepared.inputs, [KnockoutCondition.window(cut, range(4))])
    assert float((knocked - engine.clean(prepared.inputs)).abs().max()) > 1e-3  # a real cut
    torch.testing.assert_close(logits[0].softmax(-1), knocked, atol=1e-5, rtol=0)
    clean = engine.clean(longer)
    torch.testing.assert_close(logits[1].softmax(-1), clean, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"control_cut": 0.5}, "plant=True training only"),
        ({"last_frame_loss": 1.0}, "plant=True training only"),
        ({"plant": True, "control_cut": 1.5}, "a share, from 0 to 1"),
    ],
)
def test_planted_training_options_are_refused_where_they_mean_nothing(tmp_path, settings, message):
    from flowtrace.toy.train import TrainConfig, train

    with pytest.raises(FlowtraceError, match=message):
        train(tmp_path, TrainConfig(steps=1, **settings), log=lambda line: None)
    assert not any(tmp_path.iterdir())  # refused before anything is written
