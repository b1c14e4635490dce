"""A TVBench-sized store: write cost per flush as the store grows, files on disk, and the time to
open it and average a knockout curve, against the layout of one chunk per sample (the store before
format 2: `to_zarr(append_dim=...)` with consolidation after every sample), in one process.

    python benchmarks/store_scale.py --samples 2600
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from flowtrace.kinds.common import answer_variables
from flowtrace.store import CubeStore, analysed_mask
from flowtrace.store.cube import CLEAN_VARIABLES, Schema, stack

warnings.filterwarnings("ignore", message="Consolidated metadata")


def schema(layers: int, sources: int, targets: int) -> Schema:
    """The knockout cube's variables at the 7B model's depth."""
    dims = ("layer", "source", "target")
    variables = {**CLEAN_VARIABLES, **answer_variables(dims)}
    return Schema(
        variables,
        {
            "layer": np.arange(layers),
            "source": [f"s{i}" for i in range(sources)],
            "target": [f"t{i}" for i in range(targets)],
        },
    )


def record(cube: Schema, i: int, rng: np.random.Generator):
    r = cube.empty(f"task/{i:05d}")
    for name in ("prob_pred", "prob_true", "rel_change_pred", "rel_change_true"):
        r.values[name][...] = rng.random(r.values[name].shape)
    r.values["new_pred"][...] = "A"
    r.coords.update(status="ok", task=f"task{i % 10}", question="What happens? " * 4)
    return r


def files(path: Path) -> int:
    return sum(len(f) for _, _, f in os.walk(path))


def open_and_average(path: Path) -> float:
    started = time.perf_counter()
    ds = xr.open_zarr(path, consolidated=True)
    ok = analysed_mask(ds).values
    ds["rel_change_pred"].values[ok].mean(axis=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2600)
    parser.add_argument("--baseline-samples", type=int, default=200)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--flush", type=int, default=16)
    args = parser.parse_args()
    cube = schema(args.layers, 3, 3)
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="flowtrace-store-"))

    path = work / "batched.zarr"
    flushes: list[float] = []
    with CubeStore(path, {"recipe": "bench"}, schema=cube, flush_seconds=3600) as store:
        for i in range(args.samples):
            store.append(record(cube, i, rng))
            if (i + 1) % args.flush == 0:
                started = time.perf_counter()
                store.flush()
                flushes.append(time.perf_counter() - started)
    tenth = max(1, len(flushes) // 10)
    new = {
        "layout": "format 2 (64-sample chunks, batched flushes)",
        "samples": args.samples,
        "flush_s_first_tenth": round(float(np.median(flushes[:tenth])), 4),
        "flush_s_last_tenth": round(float(np.median(flushes[-tenth:])), 4),
        "files": files(path),
        "open_and_average_s": round(open_and_average(path), 3),
    }
    print(json.dumps(new))

    old_path = work / "per_sample.zarr"
    appends = []
    for i in range(args.baseline_samples):
        ds = stack([record(cube, i, rng)], cube)
        started = time.perf_counter()
        if i == 0:
            ds.to_zarr(old_path, mode="w-", zarr_format=3, consolidated=True)
        else:
            ds.to_zarr(old_path, append_dim="sample", consolidated=True)
        appends.append(time.perf_counter() - started)
    tenth = max(1, len(appends) // 10)
    old = {
        "layout": "format 1 (one chunk per sample, consolidated per append)",
        "samples": args.baseline_samples,
        "append_s_per_sample_first_tenth": round(float(np.median(appends[:tenth])), 4),
        "append_s_per_sample_last_tenth": round(float(np.median(appends[-tenth:])), 4),
        "files": files(old_path),
        "files_at_full_size": round(files(old_path) / args.baseline_samples * args.samples),
        "open_and_average_s": round(open_and_average(old_path), 3),
    }
    print(json.dumps(old))
    per_sample_new = float(np.median(flushes)) / args.flush
    print(
        json.dumps(
            {
                "write_s_per_sample": round(per_sample_new, 5),
                "old_over_new_write": round(float(np.median(appends)) / per_sample_new, 1),
                "old_over_new_files": round(old["files_at_full_size"] / new["files"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
