"""Trace programs as users run them: every program through `flowtrace.runner.run` (the path of
`flowtrace run`, figures off), seconds per sample and peak GPU memory, beside the paper's four
sweeps in one pass (the engine's reference figure), in one process.

`--timed`: the README's own-recipe example, counterfactual_patch, frame_mlp_ablation (a mean
ablation of every frame × layer), frame_attention_mass and the four sweeps as one pass, each
warmed up on one sample and then timed over `--samples`. `--smoke`: every recipe in recipes/ and
every program in the README and docs/, `--smoke-samples` each (first sample's compile included),
with the samples' statuses. One JSON line per measurement.

    python benchmarks/programs.py --shape 7b --device cuda --clips CLIPS --timed --smoke
    python benchmarks/programs.py --shape toy --device cpu --samples 2 --timed
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import torch
from end_to_end import GpuBusy, write_clips
from reference_engine import SHAPES, build, sync

from flowtrace.recipe import load_recipes
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube

ROOT = Path(__file__).resolve().parents[1]
TIMED = (
    "readme_example",
    "counterfactual_patch",
    "frame_mlp_ablation",
    "frame_attention_mass",
    "cross_frame",
    "programs/cross_frame",
)


def doc_programs(work: Path) -> dict[str, Path]:
    """The programs the README and docs/ show, written to files as a user would copy them: the
    README's block after `<!-- own-recipe -->`, and docs' blocks after `<!-- program: NAME -->`."""
    out = {}
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- own-recipe -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    out["readme_example"] = block
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for name, code in re.findall(
            r"<!-- program: (\w+) -->\s*```python\n(.*?)```", doc.read_text(), re.S
        ):
            out[name] = code
    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, code in out.items():
        paths[name] = work / f"{name}.py"
        paths[name].write_text(code)
    return paths


def recipe_files(work: Path) -> dict[str, Path]:
    files = {p.stem: p for p in sorted((ROOT / "recipes").glob("*.py"))}
    # The built-in kinds written as programs (recipes/programs/), beside their declarations.
    written = {f"programs/{p.stem}": p for p in sorted((ROOT / "recipes/programs").glob("*.py"))}
    return {**files, **written, **doc_programs(work / "programs")}


def timed(loaded, path: Path, options: RunOptions, device: str, samples: int) -> dict:
    """One run of `path` over `samples` samples: s per sample, peak GiB, GPU busy, statuses."""
    recipes = load_recipes(path)
    recipe = recipes[0] if len(recipes) == 1 else recipes
    if len(recipes) == 1:
        options = dataclasses.replace(options, out=options.out.with_suffix(".zarr"))
    shutil.rmtree(options.out, ignore_errors=True)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    stamps: list[float] = []
    with GpuBusy(device) as busy:
        started = time.perf_counter()
        run(recipe, options, loaded=loaded, progress=lambda *_: stamps.append(time.perf_counter()))
        sync(device)
        seconds = time.perf_counter() - started
    # Between the first and the last sample's records: throughput, without what a run pays once
    # (its stores' first flush and close, the first sample's self-check).
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    row = {
        "s_per_sample": round(seconds / samples, 4),
        "steady_s_per_sample": None if steady is None else round(steady, 4),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "gpu_busy": None if busy.share is None else round(busy.share, 3),
    }
    stores = [options.out] if options.out.suffix == ".zarr" else sorted(options.out.glob("*.zarr"))
    statuses: dict[str, int] = {}
    engines: set[str] = set()
    reasons: list[str] = []
    for store in stores:
        ds = open_cube(store)
        for status in ds["status"].values:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        engines |= {str(e) for e in ds["engine"].values if str(e)}
        reasons += [str(r) for r in ds["reason"].values if str(r)][:2]
    return {**row, "statuses": statuses, "engines": sorted(engines), "reasons": reasons[:2]}


def first_result(loaded, path: Path, options: RunOptions) -> dict:
    """Seconds from now (the model loaded) to each finished sample of one run."""
    shutil.rmtree(options.out, ignore_errors=True)
    started, seen = time.perf_counter(), []

    def progress(done: int, total: int, status: str) -> None:
        seen.append(round(time.perf_counter() - started, 2))

    recipes = load_recipes(path)
    run(recipes if len(recipes) > 1 else recipes[0], options, progress=progress, loaded=loaded)
    return {"measure": "first_result", "seconds_to_each_sample": seen, "compile": os.environ.get(
        "FLOWTRACE_COMPILE", "default")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="toy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--smoke-samples", type=int, default=2)
    parser.add_argument("--clips", type=Path, help="clips written beforehand by write_clips")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--timed", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated names to run (default all)")
    parser.add_argument(
        "--first-result",
        type=int,
        default=0,
        metavar="N",
        help="first, in this fresh process: the four sweeps in one pass over N samples, seconds "
        "from the model loaded to each sample's record (the run's compile setting as given)",
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="flowtrace-programs-"))
    data = args.clips or write_clips(work / "data", max(args.samples, 8))
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    loaded = build(args.shape, args.device, dtype, "sdpa")
    files = recipe_files(work)
    only = set(filter(None, args.only.split(",")))
    header = {
        "measure": "setup",
        "shape": args.shape,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "layers": loaded.num_layers,
    }
    print(json.dumps(header), flush=True)

    def options(name: str, limit: int, **extra) -> RunOptions:
        return RunOptions(
            data=str(data), out=work / "out" / name, limit=limit, sample_mode="all",
            plot=False, device=args.device, **extra,
        )  # fmt: skip

    if args.first_result:
        print(json.dumps(first_result(loaded, files["paper"], options("first", args.first_result))))
    if args.timed:
        four = files["paper"]
        for name in (*TIMED, "paper"):
            if only and name not in only:
                continue
            path = four if name == "paper" else files[name]
            try:
                timed(loaded, path, options(f"warm_{name}", 1), args.device, 1)  # compiles
                row = timed(loaded, path, options(name, args.samples), args.device, args.samples)
                print(json.dumps({"measure": "timed", "program": name, **row}), flush=True)
            except Exception as error:  # noqa: BLE001 - report and go on to the next
                print(json.dumps({"measure": "timed", "program": name, "error": repr(error)}))
                traceback.print_exc()
    if args.smoke:
        for name, path in files.items():
            if only and name not in only:
                continue
            extra = {}
            if name == "open_ended":
                extra = {"data": f"tvbench-open:{data}"}
            eager = name == "attention_map"
            try:
                if eager:  # its kind reads attention weights: the same weights, eager attention
                    loaded.model.set_attn_implementation("eager")
                chosen = dataclasses.replace(loaded, attn="eager") if eager else loaded
                stem = name.replace("/", "_")
                opts = dataclasses.replace(options(f"smoke_{stem}", args.smoke_samples), **extra)
                row = timed(chosen, path, opts, args.device, args.smoke_samples)
                print(json.dumps({"measure": "smoke", "program": name, **row}), flush=True)
            except Exception as error:  # noqa: BLE001 - report and go on to the next
                print(json.dumps({"measure": "smoke", "program": name, "error": repr(error)}))
                traceback.print_exc()
            finally:
                if eager:
                    loaded.model.set_attn_implementation("sdpa")
    if args.device.startswith("cuda"):
        print(json.dumps({"measure": "peak_total_gib", "value": round(
            torch.cuda.max_memory_allocated() / 2**30, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
