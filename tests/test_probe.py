"""Logit lens (gen_prob) and eval-only runs against independent computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from flowtrace.data import read_frames, read_samples
from flowtrace.engine import ReferenceEngine
from flowtrace.errors import FlowtraceError
from flowtrace.models import load_model
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


def test_logit_lens_equals_hidden_states_through_the_head(loaded, tiny_data: Path):
    sample = read_samples(tiny_data)[0]
    inputs = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8)).inputs
    model = loaded.model
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    # hidden_states[i + 1] is layer i's output, except the last entry, which is already normed.
    hidden = [h[0, -1] for h in out.hidden_states[1:]]
    head, norm = model.lm_head, model.model.language_model.norm
    engine = ReferenceEngine(loaded)
    raw = engine.logit_lens(inputs, norm=False)[:, 0]
    normed = engine.logit_lens(inputs, norm=True)[:, 0]
    layers = loaded.num_layers
    assert raw.shape == (layers, model.config.text_config.vocab_size)
    for i in range(layers - 1):
        want = head(hidden[i]).softmax(-1)
        assert torch.allclose(raw[i], want, atol=1e-6)
        assert torch.allclose(normed[i], head(norm(hidden[i])).softmax(-1), atol=1e-6)
    assert torch.allclose(normed[-1], out.logits[0, -1].softmax(-1), atol=1e-5)


def test_gen_prob_cube_and_eval_only(loaded, tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "gen_prob.zarr"
    options = RunOptions(
        model=str(tiny_model_dir), data=str(tiny_data), limit=4, out=out, sample_mode="all"
    )
    run(load_recipe("recipes/gen_prob.py"), options, loaded=loaded)
    ds = xr.open_zarr(out)
    assert ds["prob_option"].dims == ("sample", "layer", "lens", "option")
    model = loaded.model
    head, norm = model.lm_head, model.model.language_model.norm
    samples = {s.id: s for s in read_samples(tiny_data)}
    for sample_id in ds["sample"].values:
        sample = samples[str(sample_id)]
        prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
        with torch.no_grad():
            out_all = model(**prepared.inputs, output_hidden_states=True)
            # Layers 0..L-2 from hidden_states (normed here); the last from the model's logits.
            hidden = torch.stack([h[0, -1] for h in out_all.hidden_states[1:-1]])
            probs = torch.cat([head(norm(hidden)).softmax(-1), out_all.logits[0, -1:].softmax(-1)])
        vocab = loaded.tokenizer.get_vocab()
        letters = sample.option_letters()
        true = letters[sample.answer_index()]
        row = ds.sel(sample=sample_id, lens="norm")
        for layer in range(loaded.num_layers):
            p_true = float(probs[layer, vocab[true]])
            assert row["prob_true"].sel(layer=layer).item() == pytest.approx(p_true, abs=1e-5)
            false = [float(probs[layer, vocab[x]]) for x in letters if x != true]
            mean_false = sum(false) / len(false)
            assert row["prob_false"].sel(layer=layer).item() == pytest.approx(mean_false, abs=1e-5)
        top = loaded.decode(int(probs[-1].argmax()))
        assert row["top_token"].sel(layer=loaded.num_layers - 1, k=0).item() == top
    assert out.with_suffix(".png").exists()

    evals = tmp_path / "eval.zarr"
    options = RunOptions(model=str(tiny_model_dir), data=str(tiny_data), out=evals, eval_only=True)
    result = run(load_recipe("recipes/cross_frame.py"), options, loaded=loaded)
    ds = xr.open_zarr(evals)
    assert result.counts["ok"] == ds.sizes["sample"] == 8
    assert "prob_pred" in ds and bool(ds["prob_pred"].isnull().all())  # no knockout ran
    assert int(ds.attrs["eval_only"]) == 1
    assert evals.with_suffix(".png").exists()


def test_video_logit_lens_cube_equals_hidden_states(loaded, tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "lens.zarr"
    options = RunOptions(
        model=str(tiny_model_dir), data=str(tiny_data), limit=2, out=out, sample_mode="all"
    )
    run(load_recipe("recipes/logit_lens.py"), options, loaded=loaded)
    ds = xr.open_zarr(out)
    assert ds["top_token"].dims == ("sample", "layer", "frame", "h", "w", "k")
    assert out.with_suffix(".png").stat().st_size > 10_000
    model = loaded.model
    head, norm = model.lm_head, model.model.language_model.norm
    samples = {s.id: s for s in read_samples(tiny_data)}
    for sample_id in ds["sample"].values:
        sample = samples[str(sample_id)]
        inputs = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8)).inputs
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states
        video = (inputs["input_ids"][0] == loaded.processor.video_token_id).nonzero()[:, 0]
        row = ds.sel(sample=sample_id)
        for layer in (0, loaded.num_layers - 2):
            with torch.no_grad():
                probs = head(norm(hidden[layer + 1][0, video])).softmax(-1)  # frame-major order
            best = probs.max(-1)
            for t, h, w in [(0, 0, 0), (3, 1, 2), (7, 3, 3)]:
                i = t * 16 + h * 4 + w
                cell = row.sel(layer=layer, frame=t, h=h, w=w, k=0)
                assert cell["top_token"].item() == loaded.decode(int(best.indices[i]))
                assert cell["top_prob"].item() == pytest.approx(float(best.values[i]), abs=1e-5)


def test_attention_mass_equals_output_attentions(tiny_model_dir, tiny_data, tmp_path):
    eager = load_model(str(tiny_model_dir), device="cpu", dtype="float32", attn="eager")
    out = tmp_path / "attention.zarr"
    options = RunOptions(
        model=str(tiny_model_dir), data=str(tiny_data), limit=1, out=out, sample_mode="all"
    )
    run(load_recipe("recipes/attention_map.py"), options, loaded=eager)
    ds = xr.open_zarr(out)
    assert ds["attention"].dims == ("sample", "condition", "layer", "head", "target", "source")
    sample = {s.id: s for s in read_samples(tiny_data)}[str(ds["sample"].values[0])]
    prepared = eager.adapter.prepare(eager, sample, read_frames(sample.video, 8))
    with torch.no_grad():
        weights = eager.model(**prepared.inputs, output_attentions=True).attentions
    row = ds.isel(sample=0).sel(condition="clean")
    layout = prepared.layout
    for layer in (0, 3):
        for target, source in [("last", "question"), ("frame_3", "frame_1"), ("options", "system")]:
            queries, keys = layout[target], layout[source]
            by_hand = weights[layer][0][:, queries][:, :, keys].sum(-1).mean(-1)  # per head
            got = row["attention"].sel(layer=layer, target=target, source=source).values
            assert np.allclose(got, by_hand.numpy(), atol=1e-5)
    blocked = ds.isel(sample=0).sel(condition="blocked")["attention"]
    assert float(blocked.sel(target="frame_3", source="frame_1").max()) == 0.0
    rows = blocked.sel(target="frame_3").sum("source")  # a row's mass over all groups
    assert bool((rows <= 1 + 1e-5).all())

    sdpa = load_model(str(tiny_model_dir), device="cpu", dtype="float32", attn="sdpa")
    with pytest.raises(FlowtraceError, match="attn=eager"):
        ReferenceEngine(sdpa).attention_mass(prepared.inputs, torch.ones(1, 4), [])
