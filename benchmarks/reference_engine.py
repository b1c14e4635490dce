"""Reference knockout engine at full size: clean pass and a cross-frame sweep, timed.

Builds a LLaVA-NeXT-Video model from a config with random weights (no download), in the shape
the paper's LLaVA-NeXT-7B-Video-FT analyses use: CLIP ViT-L/14 at 336 px, 2×2 pooling to 12×12
tokens per frame, 8 frames = 1152 video tokens, Vicuna-7B decoder (32 layers × 4096). The prompt
is the toy's (the embedded word-level tokenizer, the reference eval_mvbench template) on a
held-out toy video, so sequence length is the video plus ~80 text tokens.

    python benchmarks/reference_engine.py --shape 7b --device cuda      # H100: see README
    python benchmarks/reference_engine.py --shape toy --device cpu

Prints one JSON line per measurement: tokens, seconds per condition per batch size, peak memory.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from nnsight.modeling.transformers import TransformersModel
from transformers import LlavaNextVideoConfig
from transformers import LlavaNextVideoForConditionalGeneration as Model

from flowtrace.data import read_frames, read_samples
from flowtrace.engine import ReferenceEngine
from flowtrace.models import LlavaNextVideoAdapter, LoadedModel
from flowtrace.recipe import load_recipe
from flowtrace.tokens.sweep import Sweep, default_window
from flowtrace.toy import EMBEDDED_DATA, EMBEDDED_MODEL
from flowtrace.toy.build import build_config, build_processor

# toy: the embedded model; 7b and 13b: the paper's LLaVA-NeXT shapes; 7b-thin: the 7B layout
# (layers, heads, frames, tokens) with widths of 4 per head, so the host's share of a run (layer
# calls, masks, a program's bookkeeping) can be profiled on a CPU, where compute is then small.
SHAPES = ("toy", "7b", "13b", "7b-thin")
# Each shape's decoder (Vicuna-7B, Vicuna-13B): layers, hidden, heads, intermediate.
DECODERS = {
    "7b": (32, 4096, 32, 11008),
    "13b": (40, 5120, 40, 13824),
    "7b-thin": (32, 128, 32, 256),
}


def seven_b_config(tokenizer, shape: str = "7b", max_positions: int = 4096) -> LlavaNextVideoConfig:
    """LLaVA-NeXT-7B-Video-FT's shape: CLIP ViT-L/14-336 and Vicuna-7B, or another of `DECODERS`
    (`7b-thin` with a tiny vision tower too). `max_positions`: room for more frames than Vicuna's
    4096 tokens hold."""
    layers, hidden, heads, intermediate = DECODERS[shape]
    thin = shape == "7b-thin"
    return build_config(
        tokenizer,
        layers=layers,
        hidden=hidden,
        heads=heads,
        intermediate=intermediate,
        vision_hidden=64 if thin else 1024,
        vision_layers=2 if thin else 24,
        vision_heads=4 if thin else 16,
        vision_intermediate=128 if thin else 4096,
        vision_feature_layer=-2,
        image_size=336,
        patch_size=14,
        vocab_size=32064,
        max_positions=max_positions,
    )


def build(shape: str, device: str, dtype: torch.dtype, attn: str, frames: int = 8) -> LoadedModel:
    """The model of `shape` with seeded random weights (the toy's own); `frames`: the most frames
    a prompt will hold (the context grows past Vicuna's 4096 tokens where they need it)."""
    from transformers import AutoProcessor

    toy_processor = AutoProcessor.from_pretrained(EMBEDDED_MODEL)
    if shape == "toy":
        model = Model.from_pretrained(EMBEDDED_MODEL, dtype=dtype, attn_implementation=attn)
        processor = toy_processor
    else:
        processor = build_processor(toy_processor.tokenizer, image_size=336, patch_size=14)
        room = max(4096, 2 ** (frames * 144 + 256).bit_length())  # 144 video tokens a frame
        config = seven_b_config(toy_processor.tokenizer, shape, max_positions=room)
        config._attn_implementation = attn
        torch.manual_seed(0)
        with torch.device(device):
            model = Model(config).to(dtype)
    model = model.to(device).eval()
    return LoadedModel(
        adapter=LlavaNextVideoAdapter(),
        model=model,
        processor=processor,
        nnsight=TransformersModel(model, task="image-text-to-text", processor=processor),
        model_id=f"random-{shape}",
        revision="random",
        device=torch.device(device),
        dtype=dtype,
        attn=attn,
        num_layers=model.config.text_config.num_hidden_layers,
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="toy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--batch-sizes", default="1,4,8")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    started = time.perf_counter()
    loaded = build(args.shape, args.device, dtype, args.attn)
    build_s = time.perf_counter() - started
    sample = read_samples(EMBEDDED_DATA, tasks=["Moving Direction"])[0]
    prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
    layout = prepared.layout
    recipe = load_recipe("recipes/cross_frame.py")
    window = default_window(loaded.num_layers)
    conditions = [c.knockout for c in recipe.conditions(layout, loaded.num_layers, Sweep(window))]
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "attn": args.attn,
        "dtype": str(dtype),
        "seq_len": layout.seq_len,
        "video_tokens": int(layout["video"].size),
        "grid": list(layout.video_grid),
        "layers": loaded.num_layers,
        "build_s": round(build_s, 1),
    }
    engine = ReferenceEngine(loaded)
    engine.clean(prepared.inputs)  # warm-up
    sync(args.device)
    t = time.perf_counter()
    for _ in range(3):
        clean = engine.clean(prepared.inputs)
    sync(args.device)
    print(
        json.dumps(
            {**base, "what": "clean pass", "ms": round((time.perf_counter() - t) / 3 * 1e3, 1)}
        ),
        flush=True,
    )
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        engine = ReferenceEngine(loaded, batch_size=batch)
        engine.knockout(prepared.inputs, conditions[:batch])  # warm-up
        sync(args.device)
        t = time.perf_counter()
        probs = engine.knockout(prepared.inputs, conditions)
        sync(args.device)
        seconds = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else 0
        pred = int(clean.argmax())
        print(
            json.dumps(
                {
                    **base,
                    "what": f"cross_frame sweep, {len(conditions)} conditions, window {window}",
                    "batch": batch,
                    "s_per_condition": round(seconds / len(conditions), 4),
                    "s_sweep": round(seconds, 2),
                    "peak_gib": round(peak, 1),
                    "max_abs_dp_pred": round(float((probs[:, pred] - clean[pred]).abs().max()), 5),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
