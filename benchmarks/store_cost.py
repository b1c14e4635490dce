"""What a run's stores cost beside its analysis: the paper's four sweeps as one pass over the same
samples, with the stores written as usual, with every write deferred to the run's end, and with
writes skipped (a timing stand-in only: those stores are not kept), alternating in one process.
Prints s/sample of each and every write's seconds (the writer thread's, from `CubeStore._write`),
split into the first flush (`write_first`), later appends and the commits; and first, the
folder's own latency per file operation (a machine whose filesystem is slow at small files pays
it on each of a store's few hundred file operations).

    python benchmarks/store_cost.py --shape 7b --device cuda --clips CLIPS --samples 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
PHASES = ("write_first", "append_arrays", "commit")


def fs_probe(folder: Path, count: int = 200) -> dict[str, float]:
    """Microseconds per file operation in `folder`: make a folder, write a small file, rename
    it, stat it, list the folder (what a store's flush does, a few hundred times)."""
    folder.mkdir(parents=True, exist_ok=True)
    spent = dict.fromkeys(("mkdir", "write", "rename", "stat", "listdir"), 0.0)
    for i in range(count):
        marks = [time.perf_counter()]
        (folder / f"d{i}").mkdir()
        marks.append(time.perf_counter())
        (folder / f"d{i}" / "f.partial").write_bytes(b"x" * 512)
        marks.append(time.perf_counter())
        os.replace(folder / f"d{i}" / "f.partial", folder / f"d{i}" / "f")
        marks.append(time.perf_counter())
        os.stat(folder / f"d{i}" / "f")
        marks.append(time.perf_counter())
        os.listdir(folder / f"d{i}")
        marks.append(time.perf_counter())
        for key, start, end in zip(spent, marks, marks[1:], strict=False):
            spent[key] += end - start
    shutil.rmtree(folder)
    return {f"{key}_us": round(1e6 * value / count, 1) for key, value in spent.items()}


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
    print(json.dumps({"measure": "fs_probe", "folder": str(work), **fs_probe(work / "probe")}))
    writes: list[float] = []
    phases = dict.fromkeys(PHASES, 0.0)
    real = writer.CubeStore._write

    def timing(name: str, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                phases[name] += time.perf_counter() - started

        return timed

    for name in PHASES:
        setattr(writer, name, timing(name, getattr(writer, name)))

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
            phases.update(dict.fromkeys(PHASES, 0.0))
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
                   "writes_s": [round(w, 3) for w in writes],
                   **{f"{k}_s": round(v, 3) for k, v in phases.items()}}  # fmt: skip
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
