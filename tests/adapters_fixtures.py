"""Tiny random checkpoints of every adapter's family, saved as their real checkpoints are.

PLLaVA and InternVL chat are written in their ORIGINAL key layout (config.json and tensor names as
magic-research/PLLaVA and OpenGVLab/InternVL save them), spelled out here by hand, so loading them
back tests the adapter's reading of that layout rather than our own writer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

LETTERS = [chr(ord("A") + i) for i in range(26)]


def word_tokenizer(
    texts: Iterable[str],
    specials: list[str],
    bos: str | None = "<s>",
    extra: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `texts` (punctuation split) with `specials` as added tokens."""
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    base = ["<unk>", "<pad>", "</s>"] + ([bos] if bos else [])
    words = set(LETTERS)
    for text in texts:
        for special in specials:
            text = text.replace(special, " ")
        words.update(piece for piece, _ in pre.pre_tokenize_str(text))
    vocab = {t: i for i, t in enumerate(dict.fromkeys(base + specials + sorted(words - set(base))))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre
    if bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=bos,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=extra or {},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    return tokenizer


def random_state(module: torch.nn.Module, seed: int, scale_head: str | None = None) -> dict:
    """Seeded random weights for every tensor of `module`'s state dict (norms around 1)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if not value.is_floating_point():
            state[key] = value.clone()
            continue
        noise = torch.randn(value.shape, generator=gen) * 0.05
        if key.endswith(("norm.weight", "layernorm.weight", "_layernorm.weight")) or (
            "norm" in key and key.endswith(".weight") and value.dim() == 1
        ):
            noise = 1.0 + noise
        state[key] = noise.contiguous()
    if scale_head:
        # Random init leaves the answer distribution flat; a larger head makes knockouts move it.
        state[scale_head] = state[scale_head] * 40
    return state


def save_checkpoint(out: Path, config: dict, state: dict, tokenizer, extra_files: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    tokenizer.save_pretrained(out)
    for name, content in extra_files.items():
        (out / name).write_text(json.dumps(content, indent=1))
    return out


# -- PLLaVA ------------------------------------------------------------------------------------

PLLAVA_PROMPT_SPECIALS = ["<image>"]


def pllava_config(tokenizer: PreTrainedTokenizerFast) -> dict:
    """A PLLaVA config.json as PllavaConfig.to_dict writes it (model_type 'llava')."""
    return {
        "architectures": ["PllavaForConditionalGeneration"],
        "model_type": "llava",
        "image_token_index": tokenizer.convert_tokens_to_ids("<image>"),
        "ignore_index": -100,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "pooling_method": "avg",
        "pooling_shape": [16, 12, 12],  # the training value; the reference overrides it
        "frame_shape": [8, 8],
        "num_frames": 16,
        "use_pooling": True,
        "pad_token_id": tokenizer.pad_token_id,
        "vocab_size": len(tokenizer),
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 4,
            "projection_dim": 32,
        },
        "text_config": {
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "pad_token_id": tokenizer.pad_token_id,
        },
    }


def pllava_state(config: dict, seed: int = 0) -> dict:
    """Random weights under PLLaVA's original names (vision_tower.vision_model.*, …)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    vision = {k: v for k, v in config["vision_config"].items() if k != "model_type"}
    text = {k: v for k, v in config["text_config"].items() if k != "model_type"}
    state = {}
    tower = CLIPVisionModel(CLIPVisionConfig(**vision))
    for key, value in random_state(tower, seed).items():
        if key.endswith("position_ids"):
            continue
        # PLLaVA saved CLIP under vision_model.* (transformers 4.x); newer CLIPVisionModel
        # classes dropped that level, the checkpoints keep it.
        key = key if key.startswith("vision_model.") else f"vision_model.{key}"
        state[f"vision_tower.{key}"] = value
    lm = LlamaForCausalLM(LlamaConfig(**text, tie_word_embeddings=False))
    for key, value in random_state(lm, seed + 1, scale_head="lm_head.weight").items():
        state[f"language_model.{key}"] = value
    gen = torch.Generator().manual_seed(seed + 2)
    dv, dt = vision["hidden_size"], text["hidden_size"]
    state["multi_modal_projector.linear_1.weight"] = torch.randn(dt, dv, generator=gen) * 0.2
    state["multi_modal_projector.linear_1.bias"] = torch.randn(dt, generator=gen) * 0.05
    state["multi_modal_projector.linear_2.weight"] = torch.randn(dt, dt, generator=gen) * 0.2
    state["multi_modal_projector.linear_2.bias"] = torch.randn(dt, generator=gen) * 0.05
    return state


def build_pllava(out: Path, prompts: list[str]) -> Path:
    tokenizer = word_tokenizer(prompts, PLLAVA_PROMPT_SPECIALS)
    config = pllava_config(tokenizer)
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "PllavaProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 32},
        "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
    }
    return save_checkpoint(
        out, config, pllava_state(config), tokenizer, {"preprocessor_config.json": preprocessor}
    )


# -- InternVL chat -----------------------------------------------------------------------------

INTERNVL_SPECIALS = ["<img>", "</img>", "<IMG_CONTEXT>", "<|user|>", "<|assistant|>", "<|end|>"]


def internvl_chat_config(tokenizer: PreTrainedTokenizerFast, ps_version: str = "v1") -> dict:
    """An InternVLChatConfig.to_dict as OpenGVLab saves it (Mini-InternVL-4B's shape, tiny)."""
    return {
        "architectures": ["InternVLChatModel"],
        "auto_map": {
            "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel",
        },
        "model_type": "internvl_chat",
        "downsample_ratio": 0.5,
        "force_image_size": 32,
        "select_layer": -1,
        "ps_version": ps_version,
        "template": "phi3-chat",
        "dynamic_image_size": True,
        "use_thumbnail": True,
        "vision_config": {
            "architectures": ["InternVisionModel"],
            "model_type": "intern_vit_6b",
            "hidden_size": 32,
            "image_size": 32,
            "patch_size": 4,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "qkv_bias": True,
            "qk_normalization": False,
            "norm_type": "layer_norm",
            "layer_norm_eps": 1e-6,
        },
        "llm_config": {
            "architectures": ["Phi3ForCausalLM"],
            "model_type": "phi3",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 4096,
            "original_max_position_embeddings": 4096,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
    }


def internvl_vision_state(vision: dict, seed: int) -> dict:
    """InternViT weights under the original names (vision_model.embeddings.class_embedding, …)."""
    gen = torch.Generator().manual_seed(seed)
    d, p, m = vision["hidden_size"], vision["patch_size"], vision["intermediate_size"]
    grid = (vision["image_size"] // p) ** 2 + 1

    def rand(*shape, scale=0.1, mean=0.0):
        return torch.randn(*shape, generator=gen) * scale + mean

    state = {
        "vision_model.embeddings.class_embedding": rand(1, 1, d),
        "vision_model.embeddings.patch_embedding.weight": rand(d, 3, p, p),
        "vision_model.embeddings.patch_embedding.bias": rand(d),
        "vision_model.embeddings.position_embedding": rand(1, grid, d),
    }
    for i in range(vision["num_hidden_layers"]):
        pre = f"vision_model.encoder.layers.{i}."
        state.update(
            {
                pre + "attn.qkv.weight": rand(3 * d, d, scale=0.2),
                pre + "attn.qkv.bias": rand(3 * d),
                pre + "attn.proj.weight": rand(d, d, scale=0.2),
                pre + "attn.proj.bias": rand(d),
                pre + "norm1.weight": rand(d, mean=1.0),
                pre + "norm1.bias": rand(d),
                pre + "norm2.weight": rand(d, mean=1.0),
                pre + "norm2.bias": rand(d),
                pre + "ls1": rand(d, mean=0.5),
                pre + "ls2": rand(d, mean=0.5),
                pre + "mlp.fc1.weight": rand(m, d, scale=0.2),
                pre + "mlp.fc1.bias": rand(m),
                pre + "mlp.fc2.weight": rand(d, m, scale=0.2),
                pre + "mlp.fc2.bias": rand(d),
            }
        )
    return state


def internvl_chat_state(config: dict, seed: int = 0) -> dict:
    from transformers import Phi3Config, Phi3ForCausalLM

    vision = config["vision_config"]
    state = internvl_vision_state(vision, seed)
    wide = vision["hidden_size"] * 4
    hidden = config["llm_config"]["hidden_size"]
    gen = torch.Generator().manual_seed(seed + 1)
    state.update(
        {
            "mlp1.0.weight": 1.0 + torch.randn(wide, generator=gen) * 0.05,
            "mlp1.0.bias": torch.randn(wide, generator=gen) * 0.05,
            "mlp1.1.weight": torch.randn(hidden, wide, generator=gen) * 0.2,
            "mlp1.1.bias": torch.randn(hidden, generator=gen) * 0.05,
            "mlp1.3.weight": torch.randn(hidden, hidden, generator=gen) * 0.2,
            "mlp1.3.bias": torch.randn(hidden, generator=gen) * 0.05,
        }
    )
    llm = {
        k: v for k, v in config["llm_config"].items() if k not in ("model_type", "architectures")
    }
    lm = Phi3ForCausalLM(Phi3Config(**llm, tie_word_embeddings=False))
    for key, value in random_state(lm, seed + 2, scale_head="lm_head.weight").items():
        state[f"language_model.{key}"] = value
    return state


def build_internvl_chat(out: Path, prompts: list[str], ps_version: str = "v1") -> Path:
    tokenizer = word_tokenizer(prompts, INTERNVL_SPECIALS)
    config = internvl_chat_config(tokenizer, ps_version)
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": 32},
        "crop_size": {"height": 32, "width": 32},
        "do_center_crop": True,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "resample": 3,
    }
    return save_checkpoint(
        out,
        config,
        internvl_chat_state(config),
        tokenizer,
        {"preprocessor_config.json": preprocessor},
    )


# -- transformers-native families --------------------------------------------------------------

CHATML = ["<|im_start|>", "<|im_end|>"]


def save_hf(out: Path, model: torch.nn.Module, processor) -> Path:
    """A transformers checkpoint: save_pretrained of a seeded random model and its processor."""
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head.mul_(40)  # random init leaves answers flat; a larger head lets knockouts move them
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def tiny_text(kind: str, tokenizer, **extra) -> dict:
    base = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 4096,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": False,
        "model_type": kind,
    }
    return {**base, **extra}


def build_qwen(out: Path, prompts: list[str], version: str) -> Path:
    """Qwen2.5-VL ('2.5') or Qwen3-VL ('3'): patch 4, merge 2, temporal patch 2."""
    import transformers as tf
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    specials = CHATML + ["<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"]
    tokenizer = word_tokenizer(
        prompts + ["seconds < > 0.5 2.5 4.5 6.5 . 1 2 3 4 5 6 7 8 9 0"],
        specials,
        bos=None,
        extra={"video_token": "<|video_pad|>", "image_token": "<|image_pad|>"},
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    size = {"shortest_edge": 8 * 8 * 4, "longest_edge": 128 * 128 * 8}
    pixel = {"patch_size": 4, "merge_size": 2, "temporal_patch_size": 2, "size": size}
    if version == "2.5":
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 64,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 16,
            "fullatt_block_indexes": [1],
        }
        text = tiny_text("qwen2_5_vl_text", tokenizer, rope_parameters=rope)
        config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
        model = tf.Qwen2_5_VLForConditionalGeneration(config)
        processor = tf.Qwen2_5_VLProcessor(
            image_processor=tf.Qwen2VLImageProcessor(**pixel),
            video_processor=Qwen2VLVideoProcessor(**pixel),
            tokenizer=tokenizer,
        )
    else:
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 64,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0, 1],
        }
        text = tiny_text(
            "qwen3_vl_text",
            tokenizer,
            head_dim=16,
            rope_parameters={**rope, "mrope_interleaved": True},
        )
        config = tf.Qwen3VLConfig(text_config=text, vision_config=vision, **common)
        model = tf.Qwen3VLForConditionalGeneration(config)
        processor = tf.Qwen3VLProcessor(
            image_processor=tf.Qwen2VLImageProcessor(**pixel),
            video_processor=Qwen3VLVideoProcessor(**pixel),
            tokenizer=tokenizer,
        )
    return save_hf(out, model, processor)


def build_onevision(out: Path, prompts: list[str], tower: str = "siglip") -> Path:
    """LLaVA-OneVision: SigLIP 32 px, patch 4 (8×8 → pooled 4×4 per frame), Qwen2 LLM. With
    tower="clip", LongVA's shape of it: a CLIP tower whose CLS feature is dropped ("default")."""
    import transformers as tf
    from transformers.models.llava_onevision.video_processing_llava_onevision import (
        LlavaOnevisionVideoProcessor,
    )

    specials = CHATML + ["<video>", "<image>"]
    tokenizer = word_tokenizer(prompts, specials, bos=None)
    vision = {
        "model_type": "siglip_vision_model" if tower == "siglip" else "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 4,
    }
    strategy = "full" if tower == "siglip" else "default"
    config = tf.LlavaOnevisionConfig(
        vision_config=vision,
        text_config=tiny_text("qwen2", tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy=strategy,
        vision_feature_layer=-1,
        image_grid_pinpoints=[[32, 32]],
        tie_word_embeddings=False,
    )
    model = tf.LlavaOnevisionForConditionalGeneration(config)
    size = {"height": 32, "width": 32}
    processor = tf.LlavaOnevisionProcessor(
        image_processor=tf.LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[32, 32]]),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=64 + (tower != "siglip"),  # a CLIP tower's CLS feature counts here
        vision_feature_select_strategy=strategy,
    )
    return save_hf(out, model, processor)


def build_internvl_hf(out: Path, prompts: list[str]) -> Path:
    """InternVL (HF-native, InternVL3 layout): 32 px, patch 4, pixel shuffle 0.5, Qwen2 LLM."""
    import transformers as tf
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    specials = CHATML + ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tokenizer = word_tokenizer(
        prompts + ["Frame1 : Frame2 Frame3 Frame4 Frame5 Frame6 Frame7 Frame8"],
        specials,
        bos=None,
        extra={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": [32, 32],
        "patch_size": [4, 4],
        "attention_bias": True,
        "use_qk_norm": False,
        "norm_type": "layer_norm",
    }
    config = tf.InternVLConfig(
        vision_config=vision,
        text_config=tiny_text("qwen2", tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    model = tf.InternVLForConditionalGeneration(config)
    size = {"height": 32, "width": 32}
    processor = tf.InternVLProcessor(
        image_processor=tf.GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        video_processor=InternVLVideoProcessor(size=size),
        tokenizer=tokenizer,
        image_seq_length=16,
    )
    return save_hf(out, model, processor)


def build_videollama3(out: Path, prompts: list[str]) -> Path:
    """VideoLLaMA3 (HF): patch 4, video merge 2 (96 px frames → 12×12 tokens), Qwen2 LLM."""
    import transformers as tf
    from transformers.models.video_llama_3.video_processing_video_llama_3 import (
        VideoLlama3VideoProcessor,
    )

    specials = CHATML + ["<|image_pad|>", "<|video_pad|>"]
    tokenizer = word_tokenizer(
        # "Time 12.3s:" splits into Time, 12, ., 3s, : (any time under 100 s).
        prompts + ["Time : , ."] + [f"{i} {i % 10}s" for i in range(100)],
        specials,
        bos=None,
        extra={"video_token": "<|video_pad|>", "image_token": "<|image_pad|>"},
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "patch_size": 4,
    }
    config = tf.VideoLlama3Config(
        vision_config=vision,
        text_config=tiny_text("qwen2", tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        tie_word_embeddings=False,
    )
    model = tf.VideoLlama3ForConditionalGeneration(config)
    size = {"shortest_edge": 8 * 8 * 4, "longest_edge": 128 * 128 * 8}
    processor = tf.VideoLlama3Processor(
        image_processor=tf.VideoLlama3ImageProcessor(patch_size=4, merge_size=1, size=size),
        video_processor=VideoLlama3VideoProcessor(patch_size=4, merge_size=2, size=size),
        tokenizer=tokenizer,
    )
    return save_hf(out, model, processor)


def videollama3_ranges(tokenizer, ids: list[int]) -> tuple[list[int], list[list[int]]]:
    """The reference's VideoLLaMA3 video range and frame ranges, from the ids alone: everything
    between its two borders, split at the commas (a comma starts the next frame). The word-level
    tokenizer has no newline token, so the borders are the token after the role `user` and the
    token after the last frame token, where the real tokenizer's first two newlines are."""
    video_pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    comma = tokenizer.convert_tokens_to_ids(",")
    start = ids.index(tokenizer.convert_tokens_to_ids("user")) + 1
    stop = max(i for i, t in enumerate(ids) if t == video_pad) + 1
    cuts = [start, *(i for i in range(start, stop) if ids[i] == comma), stop]
    return list(range(start, stop)), [list(range(a, b)) for a, b in pairwise(cuts)]
