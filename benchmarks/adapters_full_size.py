"""Every adapter at its real size with random weights: memory and time of a cross-frame sweep.

For the paper's four models and the transformers families, write config.json (the checkpoint's
own format: PLLaVA's and InternVL chat's originals, transformers' for the rest), a word-level
tokenizer with the family's special tokens and the processor files into a temporary folder; build
the model there with seeded random bf16 weights directly on the device (uninitialised then filled
in place: no checkpoint, no CPU copy); then on one 8-frame video (an mp4 decoded by decord: a
generated clip, or `--video`) run one clean pass and a cross-frame sweep (window 9) on the
ReferenceEngine and on the FastEngine, and print a table: model, video tokens, sequence length,
peak GPU memory, seconds per condition of each engine, the fast engine's max |Δp| to the reference.

    python benchmarks/adapters_full_size.py --device cuda            # GPU: full shapes
    python benchmarks/adapters_full_size.py --device cpu --shape tiny  # smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from flowtrace.data import Sample
from flowtrace.data.synth import make_clip, write_mp4
from flowtrace.data.video import sample_frames
from flowtrace.engine import FastEngine, ReferenceEngine
from flowtrace.models import ADAPTERS, LoadedModel, load_model
from flowtrace.recipe import load_recipe
from flowtrace.tokens.sweep import Sweep

FRAMES = 8
WINDOW = 9
CHATML = ["<|im_start|>", "<|im_end|>"]


# -- shapes ------------------------------------------------------------------------------------


def tiny_text(kv_heads: int, vocab: int) -> dict[str, Any]:
    """A 4-layer, 64-wide LLM with the real model's vocabulary and key/value grouping."""
    return {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
    }


def llama(full: bool, big: bool = False) -> dict[str, Any]:
    if not full:
        return tiny_text(kv_heads=4, vocab=32064)
    if big:  # Vicuna-13B
        return {
            "hidden_size": 5120,
            "intermediate_size": 13824,
            "num_hidden_layers": 40,
            "num_attention_heads": 40,
            "num_key_value_heads": 40,
            "vocab_size": 32064,
        }
    return {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32064,
    }


def qwen2_7b(full: bool) -> dict[str, Any]:
    if not full:
        return tiny_text(kv_heads=2, vocab=152064)
    return {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "rope_theta": 1000000.0,
    }


def vision(full: bool, **shape: Any) -> dict[str, Any]:
    tiny = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    return shape if full else {**shape, **tiny}


def siglip(full: bool, layers: int) -> dict[str, Any]:
    """SigLIP-so400m's tower (LLaVA-OneVision: 26 layers, VideoLLaMA3's encoder: 27)."""
    return vision(
        full,
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=layers,
        num_attention_heads=16,
    )


# -- tokenizer and files -----------------------------------------------------------------------


def tokenizer(specials: list[str], extra: dict[str, str] | None = None) -> PreTrainedTokenizerFast:
    """Word-level: the prompt's words, A–Z and the family's special tokens (ids < any vocab)."""
    words = {chr(ord("A") + i) for i in range(26)}
    clip = make_clip("Moving Direction", 0, 0, num_frames=FRAMES)
    text = " ".join([clip.question, *clip.candidates, PROMPT_WORDS])
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    words.update(piece for piece, _ in pre.pre_tokenize_str(text))
    base = ["<unk>", "<pad>", "</s>", "<s>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(base + specials + sorted(words)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        extra_special_tokens=extra or {},
    )
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


PROMPT_WORDS = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail "
    "and movement of objects, and the action and pose of persons. Based on your observations, "
    "select the best option that accurately addresses the question. USER: ASSISTANT: system user "
    "assistant Question: Options: Only give the best option. Best option:( Answer with the "
    "option's letter from the given choices directly and only give the best option. Time 0.0s: "
    "1.0s 2.0s 3.0s 4.0s 5.0s 6.0s 7.0s , seconds < > 0.5 2.5 4.5 6.5 Frame1 Frame2 Frame3 Frame4 "
    "Frame5 Frame6 Frame7 Frame8"
)


def write(folder: Path, config: dict[str, Any], tok: Any, extra: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    tok.save_pretrained(folder)
    for name, content in extra.items():
        (folder / name).write_text(json.dumps(content))
    return folder


def clip_processor(side: int, mean: tuple, std: tuple) -> dict[str, Any]:
    return {
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": side},
        "crop_size": {"height": side, "width": side},
        "do_center_crop": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "resample": 3,
    }


# -- families ----------------------------------------------------------------------------------


def pllava(folder: Path, full: bool, big: bool = False) -> Path:
    tok = tokenizer(["<image>"])
    side, patch = (336, 14) if full else (32, 4)
    config = {
        "model_type": "llava",
        "architectures": ["PllavaForConditionalGeneration"],
        "image_token_index": tok.convert_tokens_to_ids("<image>"),
        "vision_feature_layer": -2,
        "pooling_shape": [16, 12, 12],
        "use_pooling": True,
        "pad_token_id": 0,
        "vision_config": {
            "model_type": "clip_vision_model",
            "image_size": side,
            "patch_size": patch,
            "projection_dim": 768,
            **vision(
                full,
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
            ),
        },
        "text_config": {"model_type": "llama", "rms_norm_eps": 1e-5, **llama(full, big)},
    }
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    return write(folder, config, tok, {"preprocessor_config.json": clip_processor(side, mean, std)})


def internvl_chat(folder: Path, full: bool) -> Path:
    tok = tokenizer(["<img>", "</img>", "<IMG_CONTEXT>", "<|user|>", "<|assistant|>", "<|end|>"])
    side, patch = (448, 14) if full else (32, 4)
    head_half = (3072 // 32 // 2) if full else 8
    phi3 = (
        {
            "hidden_size": 3072,
            "intermediate_size": 8192,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
        }
        if full
        else llama(False)
    )
    config = {
        "model_type": "internvl_chat",
        "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoModel": "modeling_internvl_chat.InternVLChatModel"},
        "downsample_ratio": 0.5,
        "force_image_size": side,
        "select_layer": -1,
        "ps_version": "v2",
        "template": "phi3-chat",
        "vision_config": {
            "image_size": side,
            "patch_size": patch,
            "qkv_bias": True,
            "qk_normalization": False,
            "norm_type": "layer_norm",
            **vision(
                full,
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
            ),
        },
        # Phi-3-mini-128k: LongRoPE, written "su" as in the released config.
        "llm_config": {
            "architectures": ["Phi3ForCausalLM"],
            "model_type": "phi3",
            **phi3,
            "vocab_size": 32064,
            "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            "rope_scaling": {
                "type": "su",
                "long_factor": [1.5] * head_half,
                "short_factor": [1.0] * head_half,
            },
        },
    }
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return write(folder, config, tok, {"preprocessor_config.json": clip_processor(side, mean, std)})


def hf_family(build: Callable[[bool], tuple[Any, Any]]) -> Callable[[Path, bool], Path]:
    def make(folder: Path, full: bool) -> Path:
        config, processor = build(full)
        folder.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(folder)
        processor.save_pretrained(folder)
        return folder

    return make


def _qwen25(full: bool) -> tuple[Any, Any]:
    import transformers as tf
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    specials = CHATML + ["<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"]
    tok = tokenizer(specials, {"video_token": "<|video_pad|>", "image_token": "<|image_pad|>"})
    patch = 14 if full else 4
    text = {
        "model_type": "qwen2_5_vl_text",
        **qwen2_7b(full),
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": [16, 24, 24] if full else [2, 3, 3],
            "rope_theta": 1000000.0,
        },
    }
    if not full:
        text["head_dim"] = 16
    config = tf.Qwen2_5_VLConfig(
        text_config=text,
        vision_config={
            "depth": 32 if full else 2,
            "hidden_size": 1280 if full else 32,
            "intermediate_size": 3420 if full else 64,
            "num_heads": 16 if full else 4,
            "out_hidden_size": text["hidden_size"],
            "patch_size": patch,
            "window_size": 112 if full else 16,
            "fullatt_block_indexes": [7, 15, 23, 31] if full else [1],
        },
        **{
            k: tok.convert_tokens_to_ids(v)
            for k, v in (
                ("image_token_id", "<|image_pad|>"),
                ("video_token_id", "<|video_pad|>"),
                ("vision_start_token_id", "<|vision_start|>"),
                ("vision_end_token_id", "<|vision_end|>"),
            )
        },
    )
    pixel = {
        "patch_size": patch,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "size": {"shortest_edge": 64 * patch * patch, "longest_edge": 4096 * patch * patch},
    }
    processor = tf.Qwen2_5_VLProcessor(
        image_processor=tf.Qwen2VLImageProcessor(**pixel),
        video_processor=Qwen2VLVideoProcessor(**pixel),
        tokenizer=tok,
    )
    return config, processor


def _onevision(full: bool, tower: str = "siglip") -> tuple[Any, Any]:
    """LLaVA-OneVision-7B (and LLaVA-Video-7B-Qwen2, the same architecture); with
    tower="clip", LongVA-7B's shape of it: CLIP ViT-L/14 at 336 px (24×24 → 12×12 a frame, the
    CLS feature dropped, the second-last layer's features) over a Qwen2-7B whose context
    LongVA extends to 224K tokens."""
    import transformers as tf
    from transformers.models.llava_onevision.video_processing_llava_onevision import (
        LlavaOnevisionVideoProcessor,
    )

    tok = tokenizer(CHATML + ["<video>", "<image>"])
    clip = tower == "clip"
    side, patch = ((336 if clip else 384), 14) if full else (32, 4)
    tower_config = (
        vision(full, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
               num_attention_heads=16)
        if clip
        else siglip(full, layers=26)
    )  # fmt: skip
    text = {"model_type": "qwen2", **qwen2_7b(full)}
    if clip:
        text["max_position_embeddings"] = 224000
    config = tf.LlavaOnevisionConfig(
        vision_config={
            "model_type": "clip_vision_model" if clip else "siglip_vision_model",
            "image_size": side,
            "patch_size": patch,
            **tower_config,
        },
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="default" if clip else "full",
        vision_feature_layer=-2 if clip else -1,
        image_grid_pinpoints=[[side, side]],
    )
    size = {"height": side, "width": side}
    processor = tf.LlavaOnevisionProcessor(
        image_processor=tf.LlavaOnevisionImageProcessor(
            size=size, image_grid_pinpoints=[[side, side]]
        ),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tok,
        num_image_tokens=(side // patch) ** 2,
        vision_feature_select_strategy="full",
    )
    return config, processor


def _videollama3(full: bool) -> tuple[Any, Any]:
    import transformers as tf
    from transformers.models.video_llama_3.video_processing_video_llama_3 import (
        VideoLlama3VideoProcessor,
    )

    tok = tokenizer(
        CHATML + ["<|image_pad|>", "<|video_pad|>"],
        {"video_token": "<|video_pad|>", "image_token": "<|image_pad|>"},
    )
    patch = 14 if full else 4
    config = tf.VideoLlama3Config(
        vision_config={
            "patch_size": patch,
            **siglip(full, layers=27),
        },
        text_config={"model_type": "qwen2", **qwen2_7b(full)},
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
    )
    # A budget that fits 8 frames of 12×12 merged tokens (VideoLLaMA3 caps pixels per video).
    size = {"shortest_edge": 64 * patch * patch, "longest_edge": 16384 * patch * patch}
    processor = tf.VideoLlama3Processor(
        image_processor=tf.VideoLlama3ImageProcessor(patch_size=patch, merge_size=1, size=size),
        video_processor=VideoLlama3VideoProcessor(patch_size=patch, merge_size=2, size=size),
        tokenizer=tok,
    )
    return config, processor


MODELS: dict[str, Callable[[Path, bool], Path]] = {
    "LLaVA-NeXT-7B-Video-FT": lambda f, full: pllava(f, full),
    "LLaVA-NeXT-13B-Video-FT": lambda f, full: pllava(f, full, big=True),
    "Mini-InternVL-4B-Video-FT": internvl_chat,
    "VideoLLaMA3-7B": hf_family(_videollama3),
    "Qwen2.5-VL-7B": hf_family(_qwen25),
    "LLaVA-OneVision-7B": hf_family(_onevision),
    # The empirical study's models (arXiv 2508.15360, issue 36), as transformers would serve them
    # once converted: LLaVA-Video-7B-Qwen2 is LLaVA-OneVision-7B's architecture, LongVA-7B the
    # same over a CLIP tower. (InternVideo2.5 is not here: an InternLM2 LLM, remote code.)
    "LLaVA-Video-7B-Qwen2": hf_family(_onevision),
    "LongVA-7B": hf_family(lambda full: _onevision(full, tower="clip")),
}


# -- the run -----------------------------------------------------------------------------------


def load_random(folder: Path, device: str, dtype: torch.dtype) -> LoadedModel:
    """A LoadedModel of the folder's architecture with seeded random weights."""
    name = str(dtype).removeprefix("torch.")
    return load_model(str(folder), device=device, dtype=name, weights=False)


def video(path: Path | None, folder: Path, size: int) -> Sample:
    """A Moving Direction sample whose video is an mp4 (decoded by decord, as in a real run).

    Without `path`, a 32-frame generated clip is written as an mp4 into `folder` first.
    """
    clip = make_clip("Moving Direction", seed=0, index=0, num_frames=4 * FRAMES, size=size)
    if path is None:
        path = folder / "moving_direction.mp4"
        write_mp4(path, clip.frames, fps=8)
    sample = Sample(
        id="bench/0",
        task="Moving Direction",
        video=path,
        question=clip.question,
        candidates=tuple(clip.candidates),
        answer=clip.answer,
    )
    return sample


def fast_sweep(loaded, inputs, knockouts, reference: torch.Tensor, sync) -> dict[str, Any]:
    """The same sweep on the fast engine: seconds per condition and max |Δp| to the reference.

    A family the fast path cannot serve is a row entry, not a crash of the whole table.
    """
    cuda = loaded.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        fast = FastEngine(loaded)
        fast.clean(inputs)
        fast.knockout(inputs, knockouts)  # warm-up and the once-per-model self-check
        sync()
        started = time.perf_counter()
        fast.clean(inputs)
        probs = fast.knockout(inputs, knockouts)
        sync()
        seconds = time.perf_counter() - started
    except Exception as err:  # noqa: BLE001 - reported in the table
        return {"fast_s_per_condition": f"failed: {type(err).__name__}: {err}"[:120]}
    return {
        "fast_s_per_condition": round(seconds / max(1, len(knockouts)), 4),
        "fast_path": ",".join(sorted(fast.used)),
        "fast_max_abs_dp": float((probs.float() - reference.float()).abs().max()),
        "fast_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None,
    }


def bench(
    name: str, folder: Path, device: str, batch: int, clip: Path | None, dtype: torch.dtype
) -> dict[str, Any]:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    loaded = load_random(folder, device, dtype)
    build_s = time.perf_counter() - started
    sample = video(clip, folder, size=448 if device.startswith("cuda") else 64)
    # Frames as the runner reads them: the adapter's own choice where it makes one.
    prepared = loaded.adapter.prepare(loaded, sample, sample_frames(sample, FRAMES, loaded.adapter))
    engine = ReferenceEngine(loaded, batch_size=batch)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    engine.clean(prepared.inputs)  # warm-up
    sync()
    started = time.perf_counter()
    engine.clean(prepared.inputs)
    sync()
    clean_s = time.perf_counter() - started
    window = min(WINDOW, loaded.num_layers)
    conditions = load_recipe("cross_frame").conditions(
        prepared.layout, loaded.num_layers, Sweep(window)
    )
    knockouts = [c.knockout for c in conditions]
    started = time.perf_counter()
    reference = engine.knockout(prepared.inputs, knockouts)
    sync()
    sweep_s = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    fast_row = fast_sweep(loaded, prepared.inputs, knockouts, reference, sync)
    row = {
        "model": name,
        "adapter": loaded.adapter.name,
        "grid": "×".join(map(str, prepared.layout.video_grid)),
        "video_tokens": int(prepared.layout.video_positions().size),
        "seq_len": prepared.layout.seq_len,
        "layers": loaded.num_layers,
        "build_s": round(build_s, 1),
        "clean_s": round(clean_s, 3),
        "s_per_condition": round(sweep_s / max(1, len(conditions)), 3),
        "peak_gib": round(peak, 1),
        **fast_row,
    }
    del engine, loaded, prepared
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--shape", choices=("full", "tiny"), default="full")
    parser.add_argument("--models", nargs="*", default=list(MODELS), help=", ".join(MODELS))
    parser.add_argument("--batch-size", type=int, default=4, help="conditions per forward")
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        help="default: bfloat16 on a GPU, float32 on a CPU (bfloat16 there fits a 7B model in "
        "16 GB and runs on AMX where the CPU has it)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--video", type=Path, help="an mp4 to decode (default: a generated clip, written as mp4)"
    )
    args = parser.parse_args()
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = MODELS[name](Path(tmp) / name, args.shape == "full")
            dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
            row = bench(
                name, folder, args.device, args.batch_size, args.video, getattr(torch, dtype)
            )
            row["dtype"] = dtype
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    header = list(rows[0])
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    assert {r["adapter"] for r in rows} <= set(ADAPTERS)


if __name__ == "__main__":
    main()
