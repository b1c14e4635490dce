"""Every adapter on a tiny random checkpoint of its family (no weights downloaded).

For each family: the adapter is picked from config.json; token groups decode to the prompt parts
they name; frame_t's embeddings are that frame's vision features computed independently of the
adapter; a cross-frame knockout equals a plain-PyTorch forward with a hand-built mask; the
cross_frame recipe runs end to end through the runner.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from adapters_fixtures import (
    build_internvl_chat,
    build_internvl_hf,
    build_onevision,
    build_pllava,
    build_qwen,
    build_videollama3,
    videollama3_ranges,
)
from safetensors.torch import load_file, save_file

from flowtrace.data import read_frames, read_samples, sample_frames
from flowtrace.engine import FastEngine, KnockoutCondition, ReferenceEngine
from flowtrace.errors import FlowtraceError
from flowtrace.models import load_model, pick_adapter
from flowtrace.models.checkpoint import read_config
from flowtrace.models.family_templates import (
    EVAL_MVBENCH_CHATML,
    EVAL_MVBENCH_PHI3,
    INTERNVL_MEDIA,
    VIDEOLLAMA3_TVBENCH,
)
from flowtrace.models.prompt_template import EVAL_MVBENCH
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.tokens.edges import blocked_edges
from flowtrace.tokens.sweep import Sweep

FRAMES = 8


def squash(text: str) -> str:
    return "".join(text.split())


# Per family: how to build the checkpoint, the adapter its config must select, where the decoder
# layers live in the torch module (written out here, not read from the adapter), the placeholder
# token, the template text around the question, and the load options.
FAMILIES = {
    "pllava": {
        "build": lambda out, prompts: build_pllava(out, prompts),
        "render": lambda s: EVAL_MVBENCH.render(s, "<image>").text,
        "adapter": "pllava",
        "layers": lambda m: m.language_model.model.layers,
        "placeholder": "<image>",
        "tail": "Only give the best option. ASSISTANT:Best option:",
        "system_end": "USER:",
        "load": {"pooling": "8-4-4"},
        "grid": (8, 4, 4),
    },
    "internvl_chat": {
        "build": lambda out, prompts: build_internvl_chat(out, prompts),
        "render": lambda s: EVAL_MVBENCH_PHI3.render(s, INTERNVL_MEDIA).text,
        "adapter": "internvl_chat",
        "layers": lambda m: m.language_model.model.layers,
        "placeholder": "<IMG_CONTEXT>",
        "tail": "Only give the best option. <|assistant|>Best option:",
        "system_end": "<|user|>",
        "load": {},
        "grid": (8, 4, 4),
    },
}
QWEN_MEDIA = "<|vision_start|><|video_pad|><|vision_end|>"
CHATML_TAIL = "Only give the best option.<|im_end|><|im_start|>assistant Best option:"
HF = {"layers": lambda m: m.model.language_model.layers, "load": {}, "system_end": "user"}
FAMILIES.update(
    {
        "qwen2_5_vl": {
            **HF,
            "build": lambda out, prompts: build_qwen(out, prompts, "2.5"),
            "render": lambda s: EVAL_MVBENCH_CHATML.render(s, QWEN_MEDIA).text,
            "adapter": "qwen2_5_vl",
            "placeholder": "<|video_pad|>",
            "tail": CHATML_TAIL,
            "grid": (4, 12, 12),  # 8 frames in temporal patches of 2
        },
        "qwen3_vl": {
            **HF,
            "build": lambda out, prompts: build_qwen(out, prompts, "3"),
            "render": lambda s: EVAL_MVBENCH_CHATML.render(s, QWEN_MEDIA).text,
            "adapter": "qwen3_vl",
            "placeholder": "<|video_pad|>",
            "tail": CHATML_TAIL,
            "grid": (4, 12, 12),
        },
        "llava_onevision": {
            **HF,
            "build": lambda out, prompts: build_onevision(out, prompts),
            "render": lambda s: EVAL_MVBENCH_CHATML.render(s, "<video>").text,
            "adapter": "llava_onevision",
            "placeholder": "<video>",
            "trailing": 1,  # the newline embedding after the last frame
            "tail": CHATML_TAIL,
            "grid": (8, 4, 4),
        },
        # LongVA (issue 36): LLaVA-OneVision's architecture over a CLIP tower and Qwen2, as its
        # original checkpoint would be converted to transformers' layout.
        "longva": {
            **HF,
            "build": lambda out, prompts: build_onevision(out, prompts, tower="clip"),
            "render": lambda s: EVAL_MVBENCH_CHATML.render(s, "<video>").text,
            "adapter": "llava_onevision",
            "placeholder": "<video>",
            "trailing": 1,
            "tail": CHATML_TAIL,
            "grid": (8, 4, 4),
        },
        "internvl": {
            **HF,
            "build": lambda out, prompts: build_internvl_hf(out, prompts),
            "render": lambda s: EVAL_MVBENCH_CHATML.render(s, "<video>").text,
            "adapter": "internvl",
            "placeholder": "<IMG_CONTEXT>",
            "tail": CHATML_TAIL,
            "grid": (8, 4, 4),
        },
        "video_llama_3": {
            **HF,
            "build": lambda out, prompts: build_videollama3(out, prompts),
            "render": lambda s: VIDEOLLAMA3_TVBENCH.render(s, "<|video_pad|>").text,
            "adapter": "video_llama_3",
            "placeholder": "<|video_pad|>",
            # Word-level test tokenizer: the final "\n" is no token, so `last` is "assistant".
            "tail": "Answer with the option's letter from the given choices directly and only "
            "give the best option.<|im_end|><|im_start|>",
            "last": "assistant",
            "grid": (8, 8, 8),  # 64×64 frames kept whole (under 12×12 tokens a frame)
            "video_text": True,  # the video and frame groups hold the timestamps and commas
        },
    }
)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> dict[str, Path]:
    samples = read_samples(tiny_data)
    root = tmp_path_factory.mktemp("adapters")
    return {
        name: spec["build"](root / name, [spec["render"](s) for s in samples])
        for name, spec in FAMILIES.items()
    }


@pytest.fixture(scope="session")
def loaded_models(checkpoints: dict[str, Path]) -> dict:
    return {
        name: load_model(str(path), device="cpu", dtype="float32", **FAMILIES[name]["load"])
        for name, path in checkpoints.items()
    }


@pytest.fixture(scope="session")
def prepared(loaded_models: dict, tiny_data: Path) -> dict:
    sample = read_samples(tiny_data, tasks=["Moving Direction"])[0]
    return {
        name: (
            sample,
            loaded.adapter.prepare(loaded, sample, sample_frames(sample, FRAMES, loaded.adapter)),
        )
        for name, loaded in loaded_models.items()
    }


# -- picking and loading -------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_is_picked_from_config(family: str, checkpoints: dict[str, Path]):
    config = read_config(str(checkpoints[family]))
    assert pick_adapter(config, None, "x").name == FAMILIES[family]["adapter"]


# Key names as the published checkpoints' model.safetensors.index.json files list them, written out
# by hand (not taken from the fixtures): PLLaVA-7B/13B save CLIP under vision_tower.vision_model
# (with CLIP's "pre_layrnorm" spelling), the projector, a LLaVA-NeXT image_newline that PLLaVA
# never uses, and Llama under language_model; Mini-InternVL-Chat-4B-V1-5 saves InternViT under
# vision_model, the mlp1 projector and Phi-3 with fused qkv_proj / gate_up_proj.
PUBLISHED_KEYS = {
    "pllava": (
        "vision_tower.vision_model.embeddings.class_embedding",
        "vision_tower.vision_model.embeddings.patch_embedding.weight",
        "vision_tower.vision_model.embeddings.position_embedding.weight",
        "vision_tower.vision_model.pre_layrnorm.weight",
        "vision_tower.vision_model.encoder.layers.0.self_attn.k_proj.weight",
        "vision_tower.vision_model.encoder.layers.0.self_attn.out_proj.bias",
        "vision_tower.vision_model.encoder.layers.0.layer_norm1.weight",
        "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
        "multi_modal_projector.linear_1.weight",
        "multi_modal_projector.linear_2.bias",
        "language_model.model.embed_tokens.weight",
        "language_model.model.layers.0.self_attn.q_proj.weight",
        "language_model.model.layers.0.mlp.gate_proj.weight",
        "language_model.model.layers.0.post_attention_layernorm.weight",
        "language_model.model.norm.weight",
        "language_model.lm_head.weight",
    ),
    "internvl_chat": (
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.position_embedding",
        "vision_model.encoder.layers.0.attn.qkv.weight",
        "vision_model.encoder.layers.0.attn.proj.bias",
        "vision_model.encoder.layers.0.ls1",
        "vision_model.encoder.layers.0.norm2.weight",
        "vision_model.encoder.layers.0.mlp.fc2.weight",
        "mlp1.0.weight",
        "mlp1.1.weight",
        "mlp1.3.bias",
        "language_model.model.embed_tokens.weight",
        "language_model.model.layers.0.self_attn.qkv_proj.weight",
        "language_model.model.layers.0.self_attn.o_proj.weight",
        "language_model.model.layers.0.mlp.gate_up_proj.weight",
        "language_model.model.layers.0.input_layernorm.weight",
        "language_model.model.norm.weight",
        "language_model.lm_head.weight",
    ),
}
SKIPPED_KEYS = {"pllava": {"image_newline"}, "internvl_chat": set()}


@pytest.mark.parametrize("family", ["pllava", "internvl_chat"])
def test_original_layouts_are_the_published_ones(family: str, checkpoints: dict[str, Path]):
    """flowtrace's loader puts every published key onto a parameter of its module (of the same
    rank as the fixture's tensor), skips only the keys PLLaVA never uses, and the fixture holds
    the published names, so loading it in the other tests loads that layout."""
    from flowtrace.models.pllava import clip_renamer

    model = load_model(str(checkpoints[family]), device="cpu", dtype="float32").model
    params = model.state_dict()
    rename = clip_renamer(model) if family == "pllava" else (lambda key: key)
    fixture = load_file(str(checkpoints[family] / "model.safetensors"))
    for key in PUBLISHED_KEYS[family]:
        ours = rename(key)
        assert ours in params, f"{key} -> {ours}: no such parameter in flowtrace's {family}"
        assert key in fixture, f"the {family} fixture lacks the published key {key}"
        assert params[ours].dim() == fixture[key].dim(), key
    for key in SKIPPED_KEYS[family]:
        assert rename(key) is None
    published_prefixes = {key.split(".")[0] for key in PUBLISHED_KEYS[family]}
    assert {key.split(".")[0] for key in fixture} - SKIPPED_KEYS[family] == published_prefixes


def test_missing_weight_is_an_error_naming_it(checkpoints: dict[str, Path], tmp_path: Path):
    source = checkpoints["pllava"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in source.iterdir():
        if f.name != "model.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(str(source / "model.safetensors"))
    del state["multi_modal_projector.linear_2.bias"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(FlowtraceError, match="multi_modal_projector.linear_2.bias"):
        load_model(str(broken), device="cpu", dtype="float32")


def test_unknown_config_and_remote_code_errors(tmp_path: Path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(FlowtraceError, match="model_type='bert'.*adapter=NAME"):
        load_model(str(plain), device="cpu")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(
        json.dumps({"model_type": "videollama3_qwen2", "auto_map": {"AutoConfig": "x.Y"}})
    )
    with pytest.raises(FlowtraceError, match="trust_remote_code"):
        load_model(str(remote), device="cpu")


def test_internvideo25_is_refused_with_its_reason(checkpoints: dict[str, Path], tmp_path: Path):
    """InternVideo2.5 (OpenGVLab/InternVideo2_5_Chat_8B, one of arXiv 2508.15360's models) is an
    InternVL chat checkpoint over InternLM2, whose code only the checkpoint carries: refused in
    one line that says so, before any weight is read."""
    folder = tmp_path / "internvideo25"
    shutil.copytree(checkpoints["internvl_chat"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["llm_config"]["architectures"] = ["InternLM2ForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FlowtraceError, match="InternLM2ForCausalLM LLM.*InternLM2 needs"):
        load_model(str(folder), device="cpu", dtype="float32")


def test_lora_folder_without_adapter_config_is_refused(
    checkpoints: dict[str, Path], tmp_path: Path
):
    with pytest.raises(FlowtraceError, match="adapter_config.json"):
        load_model(str(checkpoints["pllava"]), device="cpu", lora=str(tmp_path))


# -- token groups --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_groups_decode_to_their_prompt_parts(family: str, loaded_models: dict, prepared: dict):
    loaded, spec = loaded_models[family], FAMILIES[family]
    sample, prep = prepared[family]
    ids = prep.inputs["input_ids"][0]
    layout = prep.layout

    def text(name: str) -> str:
        return squash(loaded.tokenizer.decode(ids[layout[name]]))

    letters = sample.option_letters()
    options = [f"({x}){c}" for x, c in zip(letters, sample.candidates, strict=True)]
    assert layout.seq_len == ids.shape[0]
    assert text("question") == squash(sample.question)
    for letter, option in zip(letters, options, strict=True):
        assert text(f"option_{letter}") == squash(option)
    true = letters[sample.candidates.index(sample.answer)]
    assert text("true_option") == squash(f"({true}){sample.answer}")
    assert text("prompt_tail") == squash(spec["tail"])
    assert text("last") == spec.get("last", "(")
    assert int(layout["last"][0]) == ids.shape[0] - 1
    assert text("system").endswith(squash(spec["system_end"]))
    placeholder = loaded.tokenizer.convert_tokens_to_ids(spec["placeholder"])
    assert bool((ids[layout.video_positions().ravel()] == placeholder).all())
    trailing = spec.get("trailing", 0)
    assert int((ids == placeholder).sum()) == int(np.prod(spec["grid"])) + trailing
    assert layout.video_grid == spec["grid"]
    t, h, w = spec["grid"]
    assert layout.video_positions().shape == (t, h, w)
    assert (layout.video_positions()[2] == layout.frame_positions(2)).all()
    if spec.get("video_text"):
        video, frames = videollama3_ranges(loaded.tokenizer, ids.tolist())
        assert layout["video"].tolist() == video
        assert [layout[f"frame_{t}"].tolist() for t in range(t)] == frames
    else:
        assert (layout.video_positions()[2].ravel() == layout["frame_2"]).all()


# -- frame features computed without the adapter -------------------------------------------------


def decoder_inputs(loaded, inputs: dict) -> torch.Tensor:
    """The embeddings the first decoder layer receives."""
    captured = {}

    def grab(module, args, kwargs):
        captured["x"] = (args[0] if args else kwargs["hidden_states"])[0]

    layer = loaded.layers(loaded.model)[0]
    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            loaded.model(**inputs)
    finally:
        handle.remove()
    return captured["x"]


def test_pllava_frames_are_pooled_clip_features(
    checkpoints: dict[str, Path], loaded_models: dict, prepared: dict
):
    """CLIP layer −2 without CLS → linear, GELU, linear → 2×2 average pool, per frame."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    path = checkpoints["pllava"]
    config = json.loads((path / "config.json").read_text())
    state = load_file(str(path / "model.safetensors"))
    vision = {k: v for k, v in config["vision_config"].items() if k != "model_type"}
    tower = CLIPVisionModel(CLIPVisionConfig(**vision)).eval()
    nested = any(k.startswith("vision_model.") for k in tower.state_dict())
    prefix = "vision_tower." if nested else "vision_tower.vision_model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    tower.load_state_dict(weights, strict=False)
    _, prep = prepared["pllava"]
    embeds = decoder_inputs(loaded_models["pllava"], prep.inputs)
    pixels = prep.inputs["pixel_values_videos"][0]
    p = "multi_modal_projector."
    for t in range(FRAMES):
        with torch.no_grad():
            patches = tower(pixels[t : t + 1], output_hidden_states=True).hidden_states[-2][0, 1:]
            hidden = F.linear(patches, state[p + "linear_1.weight"], state[p + "linear_1.bias"])
            hidden = F.linear(
                F.gelu(hidden), state[p + "linear_2.weight"], state[p + "linear_2.bias"]
            )
        side = int(patches.shape[0] ** 0.5)
        grid = hidden.reshape(side, side, -1).permute(2, 0, 1)
        want = F.avg_pool2d(grid, 2).permute(1, 2, 0).reshape(-1, hidden.shape[-1])
        got = embeds[prep.layout[f"frame_{t}"]]
        assert torch.allclose(got, want, atol=1e-5), (t, (got - want).abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_changing_one_frame_changes_exactly_its_group(
    family: str, loaded_models: dict, tiny_data: Path
):
    """Black out input frame 5: the decoder inputs change at frame group 5 // frames-per-group,
    at all of its tokens, and nowhere else (each frame is encoded on its own in these models)."""
    loaded = loaded_models[family]
    sample = read_samples(tiny_data, tasks=["Moving Direction"])[0]
    video = sample_frames(sample, FRAMES, loaded.adapter)
    dark = video.copy()
    dark[5] = 0
    clean = loaded.adapter.prepare(loaded, sample, video)
    changed = loaded.adapter.prepare(loaded, sample, dark)
    assert torch.equal(clean.inputs["input_ids"], changed.inputs["input_ids"])
    moved = (decoder_inputs(loaded, clean.inputs) - decoder_inputs(loaded, changed.inputs)).abs()
    moved = moved.amax(-1) > 1e-6
    group = 5 * clean.layout.num_frames // FRAMES
    expected = torch.zeros_like(moved)
    expected[clean.layout.frame_positions(group).ravel()] = True
    assert torch.equal(moved, expected), (moved.nonzero().ravel(), clean.layout[f"frame_{group}"])


def intern_vit_reference(config: dict, state: dict) -> torch.nn.Module:
    """transformers' own InternVL vision tower, weights converted from the original names."""
    from transformers import InternVLVisionConfig, InternVLVisionModel

    v = config["vision_config"]
    hf = InternVLVisionConfig(
        hidden_size=v["hidden_size"],
        num_hidden_layers=v["num_hidden_layers"],
        num_attention_heads=v["num_attention_heads"],
        intermediate_size=v["intermediate_size"],
        image_size=[v["image_size"]] * 2,
        patch_size=[v["patch_size"]] * 2,
        attention_bias=v["qkv_bias"],
        use_qk_norm=v["qk_normalization"],
        norm_type=v["norm_type"],
        layer_norm_eps=v["layer_norm_eps"],
        use_mean_pooling=True,
        use_absolute_position_embeddings=True,
    )
    model = InternVLVisionModel(hf).eval()
    d = v["hidden_size"]
    converted = {
        "embeddings.cls_token": state["vision_model.embeddings.class_embedding"],
        "embeddings.patch_embeddings.projection.weight": state[
            "vision_model.embeddings.patch_embedding.weight"
        ],
        "embeddings.patch_embeddings.projection.bias": state[
            "vision_model.embeddings.patch_embedding.bias"
        ],
        "embeddings.position_embeddings": state["vision_model.embeddings.position_embedding"],
    }
    for i in range(v["num_hidden_layers"]):
        o, n = f"vision_model.encoder.layers.{i}.", f"encoder.layer.{i}."
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            converted[n + f"attention.{name}.weight"] = state[o + "attn.qkv.weight"][
                j * d : (j + 1) * d
            ]
            converted[n + f"attention.{name}.bias"] = state[o + "attn.qkv.bias"][
                j * d : (j + 1) * d
            ]
        pairs = {
            "attention.projection_layer": "attn.proj",
            "layernorm_before": "norm1",
            "layernorm_after": "norm2",
            "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2",
        }
        for new, old in pairs.items():
            converted[n + new + ".weight"] = state[o + old + ".weight"]
            converted[n + new + ".bias"] = state[o + old + ".bias"]
        converted[n + "lambda_1"] = state[o + "ls1"]
        converted[n + "lambda_2"] = state[o + "ls2"]
    model.load_state_dict(converted)
    return model


@pytest.mark.parametrize("ps_version", ["v1", "v2"])
def test_internvl_chat_frames_are_pixel_shuffled_vit_features(
    ps_version: str, tmp_path: Path, tiny_data: Path
):
    """Pixel shuffle by hand: token (i, j) = patches (2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1)
    concatenated; 'v1' lists the tokens column by column (the original's transposed grid)."""
    samples = read_samples(tiny_data)
    path = build_internvl_chat(
        tmp_path / ps_version,
        [EVAL_MVBENCH_PHI3.render(s, INTERNVL_MEDIA).text for s in samples],
        ps_version=ps_version,
    )
    loaded = load_model(str(path), device="cpu", dtype="float32")
    sample = samples[0]
    prep = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, FRAMES))
    config = json.loads((path / "config.json").read_text())
    state = load_file(str(path / "model.safetensors"))
    vit = intern_vit_reference(config, state)
    embeds = decoder_inputs(loaded, prep.inputs)
    pixels = prep.inputs["pixel_values_videos"][0]
    for t in (0, 5):
        with torch.no_grad():
            patches = vit(pixels[t : t + 1]).last_hidden_state[0, 1:]
        side = int(patches.shape[0] ** 0.5)
        grid = patches.reshape(side, side, -1)
        tokens = {}
        for i in range(side // 2):
            for j in range(side // 2):
                cells = [grid[2 * i, 2 * j], grid[2 * i, 2 * j + 1]]
                cells += [grid[2 * i + 1, 2 * j], grid[2 * i + 1, 2 * j + 1]]
                tokens[i, j] = torch.cat(cells)
        order = sorted(tokens, key=lambda ij: (ij[1], ij[0]) if ps_version == "v1" else ij)
        x = torch.stack([tokens[ij] for ij in order])
        x = F.layer_norm(x, x.shape[-1:], state["mlp1.0.weight"], state["mlp1.0.bias"])
        x = F.gelu(F.linear(x, state["mlp1.1.weight"], state["mlp1.1.bias"]))
        want = F.linear(x, state["mlp1.3.weight"], state["mlp1.3.bias"])
        got = embeds[prep.layout[f"frame_{t}"]]
        assert torch.allclose(got, want, atol=1e-4), (t, (got - want).abs().max())


# -- knockout against a plain forward -------------------------------------------------------------


def plain_probs(model, layers, inputs: dict, pairs: list, layer_ids: list[int]) -> torch.Tensor:
    """A pre-hook swaps a hand-built additive mask into each listed layer's self-attention."""
    seq_len = inputs["input_ids"].shape[1]
    keep = torch.ones(seq_len, seq_len).tril()
    for queries, keys in pairs:
        keep[np.ix_(queries, keys)] = 0
    mask = ((1.0 - keep) * torch.finfo(torch.float32).min)[None, None]

    def swap(module, args, kwargs):
        kwargs["attention_mask"] = mask
        return args, kwargs

    handles = [
        layers[i].self_attn.register_forward_pre_hook(swap, with_kwargs=True) for i in layer_ids
    ]
    try:
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return logits.float().softmax(-1)


@pytest.mark.parametrize("family", FAMILIES)
def test_cross_frame_knockout_matches_plain_forward(
    family: str, loaded_models: dict, prepared: dict
):
    loaded, spec = loaded_models[family], FAMILIES[family]
    _, prep = prepared[family]
    ids = prep.inputs["input_ids"]
    placeholder = loaded.tokenizer.convert_tokens_to_ids(spec["placeholder"])
    positions = (ids[0] == placeholder).nonzero()[:, 0].tolist()
    positions = positions[: len(positions) - spec.get("trailing", 0)]
    per = len(positions) // spec["grid"][0]
    frames = [positions[i * per : (i + 1) * per] for i in range(spec["grid"][0])]
    if spec.get("video_text"):  # the reference's frames: its comma-split video range
        frames = videollama3_ranges(loaded.tokenizer, ids[0].tolist())[1]
    pairs = [(frames[t], [p for f in frames[:t] for p in f]) for t in range(1, len(frames))]
    recipe = load_recipe("cross_frame")
    blocked = recipe.conditions(prep.layout, loaded.num_layers, Sweep(window=1))[
        0
    ].knockout.blocked[0]
    want_blocked = torch.zeros_like(blocked)
    for q, k in pairs:
        want_blocked[np.ix_(q, k)] = True
    assert torch.equal(blocked, want_blocked)
    layer_sets = [(0, 1), (2,)]
    got = ReferenceEngine(loaded, batch_size=2).knockout(
        prep.inputs, [KnockoutCondition.window(blocked, layers) for layers in layer_sets]
    )
    layers = spec["layers"](loaded.model)
    clean = plain_probs(loaded.model, layers, prep.inputs, [], [])
    moved = 0.0
    for row, layer_ids in zip(got, layer_sets, strict=True):
        want = plain_probs(loaded.model, layers, prep.inputs, pairs, list(layer_ids))
        assert torch.allclose(row, want, atol=1e-5, rtol=0), (row - want).abs().max()
        moved = max(moved, float((want - clean).abs().max()))
    assert moved > 1e-5, "the knockout should move the output, or the test proves nothing"


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_engine_equals_reference(family: str, loaded_models: dict, prepared: dict):
    """Every knockout recipe and window style: the shortcut gives the full forward's numbers
    (M-RoPE, DeepStack, per-frame markers included)."""
    loaded = loaded_models[family]
    _, ready = prepared[family]
    reference, fast = ReferenceEngine(loaded, batch_size=32), FastEngine(loaded)
    clean = fast.clean(ready.inputs)
    moved = 0.0
    for name in ("cross_frame", "vql_to_ql", "question_options_to_last", "vq_to_true_option"):
        for style in ("center", "inverse", "top_down", "bottom_up"):
            conditions = load_recipe(name).conditions(
                ready.layout, loaded.num_layers, Sweep(window=1, style=style)
            )
            knockouts = [c.knockout for c in conditions]
            want = reference.knockout(ready.inputs, knockouts)
            got = fast.knockout(ready.inputs, knockouts)
            assert float((got - want).abs().max()) <= 1e-5, (name, style)
            moved = max(moved, float((want - clean).abs().max()))
    assert fast.used == {"fast"} and moved > 1e-5


def plain_greedy(model, layers, inputs: dict, pairs: list, layer_ids, steps: int):
    """Greedy decoding written without flowtrace and without a cache: every step is a full
    forward over prompt + reply so far, with a hand-built mask in the listed layers whose reply
    rows copy the last prompt token's cuts (the reference code's rule) and are causal among
    themselves. Returns the first step's probabilities and the reply ids."""
    ids = inputs["input_ids"]
    prompt_len = ids.shape[1]
    reply: list[int] = []
    first = None
    for _ in range(steps):
        seq_len = prompt_len + len(reply)
        keep = torch.ones(seq_len, seq_len).tril()
        for queries, keys in pairs:
            keep[np.ix_(queries, keys)] = 0
        keep[prompt_len:, :prompt_len] = keep[prompt_len - 1, :prompt_len]
        mask = ((1.0 - keep) * torch.finfo(torch.float32).min)[None, None]

        def swap(module, args, kwargs, mask=mask):
            kwargs["attention_mask"] = mask
            return args, kwargs

        grown = {}
        for name, value in inputs.items():
            if value.dim() >= 2 and value.shape[1] == prompt_len and not name.startswith("pixel"):
                extra = torch.tensor([reply], dtype=value.dtype) if name == "input_ids" else None
                if extra is None:  # attention mask: ones; token type ids: text (0)
                    fill = 1 if name == "attention_mask" else 0
                    extra = torch.full((1, len(reply)), fill, dtype=value.dtype)
                value = torch.cat([value, extra], dim=1)
            grown[name] = value
        handles = [
            layers[i].self_attn.register_forward_pre_hook(swap, with_kwargs=True) for i in layer_ids
        ]
        try:
            with torch.no_grad():
                logits = model(**grown).logits[0, -1].float()
        finally:
            for h in handles:
                h.remove()
        if first is None:
            first = logits.softmax(-1)
        reply.append(int(logits.argmax()))
    return first, reply


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_under_knockout_matches_plain_greedy_decoding(
    family: str, loaded_models: dict, prepared: dict
):
    """The K/V-cached generation of every family (M-RoPE positions of the reply included)
    equals uncached greedy decoding with a hand-built mask, for the clean model and a cut."""
    loaded, spec = loaded_models[family], FAMILIES[family]
    _, prep = prepared[family]
    layout = prep.layout
    video, last = layout["video"].tolist(), layout["last"].tolist()
    cut = KnockoutCondition.window(torch.from_numpy(blocked_edges("video -> last", layout)), (0, 1))
    steps = 4
    # A random model may reply with the video placeholder, which the uncached reference cannot
    # feed back; both paths run the same model with that token's logit removed.
    media = loaded.tokenizer.convert_tokens_to_ids(spec["placeholder"])

    def no_media(module, args, output):
        output[..., media] = torch.finfo(output.dtype).min
        return output

    handle = loaded.lm_head().register_forward_hook(no_media)
    try:
        probs, ids = ReferenceEngine(loaded, batch_size=2).generate(
            prep.inputs, [KnockoutCondition({}), cut], steps
        )
        layers = spec["layers"](loaded.model)
        for row, pairs in enumerate([[], [(last, video)]]):
            first, reply = plain_greedy(loaded.model, layers, prep.inputs, pairs, (0, 1), steps)
            assert torch.allclose(probs[row], first, atol=1e-5, rtol=0)
            assert ids[row].tolist() == reply
    finally:
        handle.remove()
    assert float((probs[1] - probs[0]).abs().max()) > 1e-5, "the cut should move the answer"


# -- the recipe end to end ------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_cross_frame_recipe_runs_end_to_end(
    family: str, checkpoints: dict[str, Path], loaded_models: dict, tiny_data: Path, tmp_path: Path
):
    options = RunOptions(
        model=str(checkpoints[family]),
        data=str(tiny_data),
        limit=2,
        out=tmp_path / "store.zarr",
        device="cpu",
        dtype="float32",
        sample_mode="all",
        sweep=Sweep(window=1),
        plot=False,
        **FAMILIES[family]["load"],
    )
    result = run(load_recipe("cross_frame"), options, loaded=loaded_models[family])
    assert result.counts["ok"] == 2, result.reasons


def test_lora_adapter_is_merged_into_the_weights(checkpoints: dict[str, Path], tmp_path: Path):
    """W' = W + (alpha / r) · B · A on every target, computed here from the saved tensors."""
    peft = pytest.importorskip("peft")
    path = checkpoints["pllava"]
    base = load_model(str(path), device="cpu", dtype="float32", pooling="8-4-4")
    wrapped = peft.get_peft_model(
        base.model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name:  # lora_B starts at zero; give the adapter an effect
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    wrapped.save_pretrained(tmp_path / "lora")
    adapter = load_file(str(tmp_path / "lora" / "adapter_model.safetensors"))
    original = load_file(str(path / "model.safetensors"))
    merged = load_model(
        str(path), device="cpu", dtype="float32", pooling="8-4-4", lora=str(tmp_path / "lora")
    )
    key = "language_model.model.layers.2.self_attn.v_proj"
    lora_a = adapter[f"base_model.model.{key}.lora_A.weight"]
    lora_b = adapter[f"base_model.model.{key}.lora_B.weight"]
    want = original[f"{key}.weight"] + (8 / 4) * lora_b @ lora_a
    got = merged.model.language_model.model.layers[2].self_attn.v_proj.weight
    assert torch.allclose(got, want, atol=1e-6)
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
