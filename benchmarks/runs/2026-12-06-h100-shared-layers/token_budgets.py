"""The engine alone (clean pass and one knockout call per sample for the four sweeps, inputs made
beforehand) under several batched-token budgets and side-by-side limits, each after a warm-up
pass that compiles its shapes. Run from the repository root:

    python benchmarks/runs/2026-12-06-h100-shared-layers/token_budgets.py CLIPS
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
from end_to_end import SWEEPS, engine_only  # noqa: E402
from reference_engine import build  # noqa: E402

import flowtrace.engine.fast as fast  # noqa: E402
from flowtrace.recipe import load_recipe  # noqa: E402
from flowtrace.tokens.sweep import default_window  # noqa: E402

SETTINGS = [(16384, 4096), (32768, 4096), (65536, 4096), (16384, 8192), (16384, 4096)]


def main() -> None:
    data = Path(sys.argv[1])
    loaded = build("7b", "cuda", torch.bfloat16, "sdpa")
    recipes = [load_recipe(name) for name in SWEEPS]
    window = default_window(loaded.num_layers)
    frames = loaded.adapter.default_frames
    for budget, flat in SETTINGS:
        fast.DEFAULT_TOKEN_BUDGET["cuda"] = budget
        fast.FLAT_TOKENS = flat
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        engine_only(
            loaded, recipes, data, frames, window, "cuda", True, rounds=1
        )  # compiles new shapes
        warm = time.perf_counter() - started
        seconds = np.asarray(
            engine_only(loaded, recipes, data, frames, window, "cuda", True, rounds=1)
        )
        row = {
            "budget": budget,
            "flat": flat,
            "warm_s": round(warm, 1),
            "mean": round(float(seconds.mean()), 4),
            "median": round(float(np.median(seconds)), 4),
            "min": round(float(seconds.min()), 4),
            "max": round(float(seconds.max()), 4),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
