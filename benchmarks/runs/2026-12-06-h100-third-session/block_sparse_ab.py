"""Why do the short sweeps alone run slower block-sparse? Timings, dynamo counters, a profile.

Ran from the repository root at the commit that added engine/blocks.py (see README.md here):
    TORCH_LOGS=recompiles python benchmarks/runs/2026-12-06-h100-third-session/block_sparse_ab.py
"""

import json
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
from reference_engine import build, sync
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile

from flowtrace.data import read_frames, read_samples
from flowtrace.engine import FastEngine
from flowtrace.recipe import load_recipe
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy import EMBEDDED_DATA

SWEEPS = ("cross_frame", "vql_to_ql", "question_options_to_last", "vq_to_true_option")
loaded = build("7b", "cuda", torch.bfloat16, "sdpa")
sample = read_samples(EMBEDDED_DATA, tasks=["Moving Direction"])[0]
prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
inputs, layout = prepared.inputs, prepared.layout
conds = {n: [c.knockout for c in load_recipe(n).conditions(layout, 32, Sweep(9))] for n in SWEEPS}
allc = [c for n in SWEEPS for c in conds[n]]


def timed(fn, k=3):
    sync("cuda")
    t = time.perf_counter()
    for _ in range(k):
        fn()
    sync("cuda")
    return (time.perf_counter() - t) / k


def graphs():
    return dict(counters["stats"]), sum(
        counters["recompiles"].values()
    ) if "recompiles" in counters else 0


for sparse in (True, False, True, False):
    fast = FastEngine(loaded, block_sparse=sparse)
    fast.clean(inputs)
    row = {"sparse": sparse}
    for name in (*SWEEPS, "all"):
        c = allc if name == "all" else conds[name]
        fast.knockout(inputs, c)
        fast.knockout(inputs, c)
        before = dict(counters["stats"])
        row[name] = round(timed(lambda f=fast, c=c: f.knockout(inputs, c)), 4)
        after = dict(counters["stats"])
        if after != before:
            row[name + "_compiled_during_timing"] = {k: after[k] - before.get(k, 0) for k in after}
    row["stats"] = dict(counters["stats"])
    row["flex_frames"] = {k: v for k, v in counters["frames"].items()}
    print(json.dumps(row), flush=True)

for sparse in (True, False):
    fast = FastEngine(loaded, block_sparse=sparse)
    fast.clean(inputs)
    c = conds["vql_to_ql"]
    fast.knockout(inputs, c)
    fast.knockout(inputs, c)
    sync("cuda")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fast.knockout(inputs, c)
        sync("cuda")
    print("== vql_to_ql sparse" if sparse else "== vql_to_ql dense")
    print(
        prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=50
        )
    )
    print(
        prof.key_averages().table(
            sort_by="self_device_time_total", row_limit=12, max_name_column_width=50
        )
    )
