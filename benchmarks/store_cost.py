"""What a run's stores cost beside its analysis: the paper's four sweeps as one pass over the same
samples, with the stores written as usual, with every write deferred to the run's end, and with
writes skipped (a timing stand-in only: those stores are not kept), alternating in one process.
Prints s/sample of each and every write's seconds (the writer thread's, from `CubeStore._write`).

    python benchmarks/store_cost.py --shape 7b --device cuda --clips CLIPS --samples 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from reference_engine import SHAPES, build, sync

import flowtrace.store.writer as writer
from flowtrace.errors import StoreError
from flowtrace.recipe import load_recipes
from flowtrace.runner import RunOptions, run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="toy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    loaded = build(args.shape, args.device, dtype, "sdpa")
    recipes = load_recipes(ROOT / "recipes" / "paper.py")
    work = Path(tempfile.mkdtemp(prefix="flowtrace-store-cost-"))
    writes: list[float] = []
    real = writer.CubeStore._write

    def timed_write(self, batch):
        started = time.perf_counter()
        real(self, batch)
        writes.append(time.perf_counter() - started)

    def skipped_write(self, batch):
        self.written += len(batch)

    variants = {
        "stores": ({}, timed_write),
        "one_write_at_end": ({"flush_samples": 10**9, "flush_seconds": 1e9}, timed_write),
        "no_writes": ({}, skipped_write),
    }
    options = RunOptions(
        data=str(args.clips), limit=args.samples, sample_mode="all", plot=False,
        device=args.device,
    )  # fmt: skip
    run(recipes, dataclasses.replace(options, out=work / "warm", limit=1), loaded=loaded)
    for round_ in range(args.rounds):
        for name, (extra, write) in variants.items():
            out = work / f"{name}-{round_}"
            shutil.rmtree(out, ignore_errors=True)
            writer.CubeStore._write = write
            writes.clear()
            sync(args.device)
            started = time.perf_counter()
            try:
                run(recipes, dataclasses.replace(options, out=out, **extra), loaded=loaded)
            except StoreError:  # no_writes: the run's summary finds no sample, as it should
                assert name == "no_writes"
            sync(args.device)
            seconds = time.perf_counter() - started
            writer.CubeStore._write = real
            per_sample = round(seconds / args.samples, 3)
            row = {"variant": name, "round": round_, "s_per_sample": per_sample,
                   "writes_s": [round(w, 3) for w in writes]}  # fmt: skip
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
