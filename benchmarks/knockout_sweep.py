"""The paper's four knockout sweeps on one sample: fast engine against the reference, one process.

Builds the same random-weight model as reference_engine.py (`--shape 7b`: LLaVA-NeXT-7B-Video-FT's
shape, 1152 video tokens; `--shape toy`: the embedded toy model), runs cross_frame, vql_to_ql,
question_options_to_last and vq_to_true_option at the default window (9 of 32 layers) with the
reference engine (one full forward per condition, at batch 1 and at batch 8) and with the fast
engine, and prints seconds per sample (clean pass + four sweeps) for each, the ratios, the largest
|Δp| of the answer token between the paths, the fast path's achieved TFLOP/s and its peak memory
against the weights.

    python benchmarks/knockout_sweep.py --shape 7b --device cuda     # H100 table: README
    python benchmarks/knockout_sweep.py --shape 7b --flow-map 64 --generate 32  # flow map, replies
    python benchmarks/knockout_sweep.py --shape toy --device cpu
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from reference_engine import build, sync

from flowtrace.data import read_frames, read_samples
from flowtrace.engine import FastEngine, ReferenceEngine
from flowtrace.recipe import load_recipe
from flowtrace.tokens.sweep import Sweep, default_window
from flowtrace.toy import EMBEDDED_DATA

SWEEPS = ("cross_frame", "vql_to_ql", "question_options_to_last", "vq_to_true_option")


def layer_flops(config) -> tuple[float, float]:
    """FLOPs per recomputed token per layer (weights), and per (query, key) pair (attention)."""
    text = config.get_text_config()
    hidden, inter = text.hidden_size, text.intermediate_size
    head_dim = getattr(text, "head_dim", None) or hidden // text.num_attention_heads
    kv = text.num_key_value_heads * head_dim
    weights = hidden * (hidden + 2 * kv) + hidden * hidden + 3 * hidden * inter
    # QKᵀ and PV: two multiply-adds per head dimension of every query head.
    return 2.0 * weights, 4.0 * text.num_attention_heads * head_dim


def timed(device: str, fn, repeats: int) -> tuple[float, object]:
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    sync(device)
    return (time.perf_counter() - started) / repeats, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["toy", "7b"], default="toy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="fast-path repeats (averaged)")
    parser.add_argument("--reference-batches", default="1,8")
    parser.add_argument("--profile", default="", help="a sweep to profile, e.g. vql_to_ql")
    parser.add_argument(
        "--breakdown", default="", help="token budgets (e.g. 8192,16384) for per-sweep timings"
    )
    parser.add_argument(
        "--flow-map",
        type=int,
        default=0,
        metavar="N",
        help="also time the flow map (fast engine, whole sample) against the reference engine "
        "on its first N conditions, extrapolated",
    )
    parser.add_argument(
        "--generate",
        type=int,
        default=0,
        metavar="N",
        help="also time recipes/open_ended.py: an N-token greedy reply clean and under each "
        "knockout (reference engine, batch 8)",
    )
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    loaded = build(args.shape, args.device, dtype, args.attn)
    sample = read_samples(EMBEDDED_DATA, tasks=["Moving Direction"])[0]
    prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
    layout, inputs = prepared.layout, prepared.inputs
    window = args.window or default_window(loaded.num_layers)
    conditions = [
        c.knockout
        for name in SWEEPS
        for c in load_recipe(name).conditions(layout, loaded.num_layers, Sweep(window))
    ]
    weights_gib = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**30
    base = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "attn": args.attn,
        "seq_len": layout.seq_len,
        "video_tokens": int(layout["video"].size),
        "layers": loaded.num_layers,
        "window": window,
        "conditions": len(conditions),
        "weights_gib": round(weights_gib, 2),
    }

    def per_sample(engine):
        engine.clean(inputs)
        return engine.knockout(inputs, conditions)

    fast = FastEngine(loaded)
    per_sample(fast)  # warm-up and the once-per-model self-check
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    fast_s, fast_probs = timed(args.device, lambda: per_sample(fast), args.repeats)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    per_token, per_pair = layer_flops(loaded.model.config)
    flops = fast.work["token_layers"] * per_token + fast.work["query_keys"] * per_pair
    path = sorted(fast.used)

    def capture():
        fast._capture = None  # drop the cached capture so the clean pass really runs
        return fast.clean(inputs)

    # The recompute alone: the sample's time minus one clean (capture) pass.
    capture_s, _ = timed(args.device, capture, args.repeats)
    recompute_s = max(fast_s - capture_s, 1e-9)
    clean = fast.clean(inputs)
    pred = int(clean.argmax())
    rows = [
        {
            "engine": "fast",
            "s_per_sample": round(fast_s, 3),
            "capture_s": round(capture_s, 3),
            "recompute_tflops": round(flops / recompute_s / 1e12, 1),
            "peak_gib": round(peak_gib, 2),
            "peak_over_weights": round(peak_gib / weights_gib, 2),
            "path": path,
        }
    ]
    for batch in [int(b) for b in args.reference_batches.split(",") if b]:
        reference = ReferenceEngine(loaded, batch_size=batch)
        reference.knockout(inputs, conditions[:batch])  # warm-up
        ref_s, ref_probs = timed(args.device, lambda r=reference: per_sample(r), 1)
        rows.append(
            {
                "engine": f"reference (batch {batch})",
                "s_per_sample": round(ref_s, 3),
                "fast_speedup": round(ref_s / fast_s, 1),
                "max_abs_dp_answer": float((fast_probs[:, pred] - ref_probs[:, pred]).abs().max()),
                "max_abs_dp_any": float((fast_probs - ref_probs).abs().max()),
            }
        )
    for row in rows:
        print(json.dumps({**base, **row}), flush=True)
    if args.breakdown:
        breakdown(args, loaded, inputs, layout, window, base)
    if args.flow_map:
        flow_map(args, loaded, sample, inputs, layout, window, base)
    if args.generate:
        generation(args, loaded, inputs, layout, window, base)
    if args.profile:
        profile(args, loaded, inputs, layout, window)


def profile(args, loaded, inputs, layout, window) -> None:
    """torch.profiler's top operators for one sweep on the fast path."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    recipe = load_recipe(args.profile)
    conditions = [c.knockout for c in recipe.conditions(layout, loaded.num_layers, Sweep(window))]
    fast = FastEngine(loaded)
    fast.clean(inputs)
    fast.knockout(inputs, conditions)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if "cuda" in args.device else [])
    with torch_profile(activities=activities) as prof:
        fast.knockout(inputs, conditions)
        sync(args.device)
    for key in ("self_cpu_time_total", "self_device_time_total" if "cuda" in args.device else ""):
        if key:
            print(prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=40))


def flow_map(args, loaded, sample, inputs, layout, window, base) -> None:
    """Seconds per sample of the flow map: every group pair at every window, fast engine; the
    reference engine (batch 8) timed on the first `args.flow_map` conditions and extrapolated."""
    grid = loaded.adapter.video_grid(loaded, 8)
    recipe = load_recipe("flow_map").knockout(grid[0], sample.option_letters())
    conditions = [c.knockout for c in recipe.conditions(layout, loaded.num_layers, Sweep(window))]
    fast = FastEngine(loaded)
    fast.clean(inputs)
    fast.knockout(inputs, conditions[:64])  # warm-up
    fast_s, fast_probs = timed(args.device, lambda: fast.knockout(inputs, conditions), 1)
    subset = conditions[: args.flow_map]
    reference = ReferenceEngine(loaded, batch_size=8)
    reference.knockout(inputs, subset[:8])  # warm-up
    ref_s, ref_probs = timed(args.device, lambda: reference.knockout(inputs, subset), 1)
    ref_total = ref_s / len(subset) * len(conditions)
    row = {
        "recipe": "flow_map",
        "conditions": len(conditions),
        "fast_s_per_sample": round(fast_s, 2),
        "reference_b8_s_per_sample_extrapolated": round(ref_total, 1),
        "fast_speedup": round(ref_total / fast_s, 1),
        "max_abs_dp_any_on_subset": float((fast_probs[: len(subset)] - ref_probs).abs().max()),
    }
    print(json.dumps({**base, **row}), flush=True)


def generation(args, loaded, inputs, layout, window, base) -> None:
    """Seconds per sample of the open-ended recipe: greedy replies under every knockout."""
    from flowtrace.engine import KnockoutCondition

    recipe = load_recipe("open_ended")
    knockouts = [c.knockout for c in recipe.conditions(layout, loaded.num_layers, Sweep(window))]
    conditions = [KnockoutCondition({}), *knockouts]
    engine = ReferenceEngine(loaded, batch_size=8)
    engine.generate(inputs, conditions[:8], 2)  # warm-up
    seconds, (_, ids) = timed(
        args.device, lambda: engine.generate(inputs, conditions, args.generate), 1
    )
    steps = int((ids >= 0).sum(-1).max())
    row = {
        "recipe": "open_ended",
        "conditions": len(conditions),
        "max_new_tokens": args.generate,
        "longest_reply": steps,
        "s_per_sample": round(seconds, 2),
        "ms_per_condition_token": round(1000 * seconds / len(conditions) / max(steps, 1), 2),
    }
    print(json.dumps({**base, **row}), flush=True)


def breakdown(args, loaded, inputs, layout, window, base) -> None:
    """Seconds of each sweep alone on the fast path, at several token budgets."""
    for budget in [int(b) for b in args.breakdown.split(",")]:
        fast = FastEngine(loaded, token_budget=budget)
        fast.clean(inputs)
        row = {"engine": "fast", "token_budget": budget}
        for name in SWEEPS:
            recipe = load_recipe(name)
            conditions = [
                c.knockout for c in recipe.conditions(layout, loaded.num_layers, Sweep(window))
            ]
            fast.knockout(inputs, conditions)  # warm-up
            seconds, _ = timed(args.device, lambda c=conditions, f=fast: f.knockout(inputs, c), 2)
            row[f"{name}_s"] = round(seconds, 3)
        print(json.dumps({**base, **row}), flush=True)


if __name__ == "__main__":
    main()
