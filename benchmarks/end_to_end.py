"""What users run, timed: the paper's four sweeps through `flowtrace.runner.run` (the path of
`flowtrace run`, figures off) as four runs and as one pass, beside the engine alone, in one process.

Writes realistic clips first (640×360 mp4, 10 s at 24 fps, TVBench layout: decoding and the
processor cost what they cost on real data), loads one model (`--shape toy`: the embedded toy;
`--shape 7b`: LLaVA-NeXT-7B-Video-FT's shape with random weights, as benchmarks/knockout_sweep.py),
and prints one JSON line per measurement: seconds per sample, the ratio to the engine alone, and
the share of wall time the GPU was busy (NVML utilisation sampled every 50 ms; CUDA only).

    python benchmarks/end_to_end.py --shape 7b --device cuda --samples 24
    python benchmarks/end_to_end.py --shape toy --device cpu --samples 8
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import functools
import json
import pstats
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from reference_engine import SHAPES, build, sync

import flowtrace.engine.fast as fast
from flowtrace.data import read_samples, sample_frames
from flowtrace.data.sources import DataSource
from flowtrace.data.synth import TASKS, make_clip, slug, write_mp4
from flowtrace.engine import FastEngine
from flowtrace.pipeline.analysis import InFlight
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.tokens.sweep import Sweep, default_window

SWEEPS = ("cross_frame", "vql_to_ql", "question_options_to_last", "vq_to_true_option")


def write_clips(root: Path, samples: int, width: int = 640, height: int = 360) -> Path:
    """`samples` clips spread over the synthetic tasks, each 10 s at 24 fps, letterboxed."""
    per_task = -(-samples // len(TASKS))
    for task in TASKS:
        entries = []
        for i in range(per_task):
            clip = make_clip(task, seed=0, index=i, num_frames=240, size=height)
            pad = (width - height) // 2
            frames = np.pad(clip.frames, ((0, 0), (0, 0), (pad, width - height - pad), (0, 0)))
            name = f"{slug(task)}_{i:04d}.mp4"
            write_mp4(root / "video" / slug(task) / name, frames, fps=24)
            entries.append(
                {
                    "video": name,
                    "question": clip.question,
                    "candidates": clip.candidates,
                    "answer": clip.answer,
                }
            )
        (root / "json").mkdir(parents=True, exist_ok=True)
        (root / "json" / f"{slug(task)}.json").write_text(json.dumps(entries))
    return root


class GpuBusy:
    """NVML utilisation sampled in a thread: the share of time a kernel ran."""

    def __init__(self, device: str) -> None:
        self.device, self.samples, self._stop = device, [], threading.Event()
        self.available = device.startswith("cuda")
        if self.available:
            try:
                torch.cuda.utilization()
            except Exception:  # noqa: BLE001 - pynvml missing
                self.available = False

    def __enter__(self) -> GpuBusy:
        if self.available:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.samples.append(torch.cuda.utilization())
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @property
    def share(self) -> float | None:
        return float(np.mean(self.samples)) / 100 if self.samples else None


def engine_only(
    loaded,
    recipes,
    data: Path,
    frames: int,
    window: int,
    device: str,
    together: bool,
    rounds: int = 2,
) -> list[float]:
    """Seconds per sample of the clean pass and every recipe's conditions through the fast
    engine, inputs and conditions made beforehand (no decoding, planning or recording): one
    knockout call per recipe (as four runs make them) or one for all (as one pass does).

    The last of `rounds` over the samples is timed, as the runs are timed warm: the first
    compiles a graph for every chunk shape they meet (a recipe alone chunks its rows otherwise
    than the pass's warm-up does)."""
    samples = read_samples(DataSource(kind="tvbench", root=data, spec=str(data)))
    engine = FastEngine(loaded)
    work = []
    for sample in samples:
        inputs = loaded.adapter.prepare(loaded, sample, sample_frames(sample, frames))
        per_recipe = [
            [c.knockout for c in recipe.conditions(inputs.layout, loaded.num_layers, Sweep(window))]
            for recipe in recipes
        ]
        work.append((inputs.inputs, [sum(per_recipe, [])] if together else per_recipe))
    for _ in range(rounds):
        seconds = []
        for inputs, calls in work:
            sync(device)
            started = time.perf_counter()
            engine.clean(inputs)
            for conditions in calls:
                engine.knockout(inputs, conditions)
            sync(device)
            seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="toy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--frames", type=int, help="frames per video (the adapter's default: 8)")
    parser.add_argument("--work", type=Path, help="Folder for clips and stores (default: temp).")
    parser.add_argument(
        "--profile",
        type=Path,
        help="After the timings, cProfile one more one-pass run (main thread; untimed) into "
        "this file and print its top calls.",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="After the timings, torch.profiler traces (CPU and GPU) of the one pass and of the "
        "engine alone on --trace-samples samples: gzipped Chrome traces and op tables here.",
    )
    parser.add_argument("--trace-samples", type=int, default=3)
    parser.add_argument(
        "--variants",
        default="default",
        help=f"Comma-separated settings to time in turn, each after its own warm-up: "
        f"{', '.join(VARIANTS)}.",
    )
    parser.add_argument(
        "--runs",
        default="all",
        help="Comma-separated runs to time (recipe names, one_pass), or all (the summary needs "
        "all).",
    )
    parser.add_argument(
        "--warm-once",
        action="store_true",
        help="Warm up before the first variant only (variants that compile nothing new).",
    )
    parser.add_argument(
        "--skip-engine-only", action="store_true", help="Time the runs alone (no engine figure)."
    )
    parser.add_argument(
        "--clips",
        type=Path,
        help="Clips written beforehand by write_clips (a machine without PyAV to encode them).",
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="flowtrace-e2e-"))
    data = args.clips or write_clips(work / "data", args.samples)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    loaded = build(args.shape, args.device, dtype, args.attn, args.frames or 8)
    recipes = [load_recipe(name) for name in SWEEPS]
    window = default_window(loaded.num_layers)
    frames = args.frames or loaded.adapter.default_frames
    count = len(read_samples(DataSource(kind="tvbench", root=data, spec=str(data))))

    compiled = FastEngine(loaded).compile

    def options(out: Path, limit: int | None = None) -> RunOptions:
        return RunOptions(
            data=str(data),
            out=out,
            sample_mode="all",
            plot=False,
            device=args.device,
            sweep=Sweep(window=window),
            limit=limit,
            frames=args.frames,
            **RUN_OPTIONS,
        )

    base = together = float("nan")
    if not args.skip_engine_only:
        run(recipes, options(work / "warm_engine"), loaded=loaded)  # compiled graphs, caches
        per_sample = engine_only(loaded, recipes, data, frames, window, args.device, False)
        base = float(np.mean(per_sample))
        print(json.dumps({"measure": "engine_only", **spread(per_sample), "samples": count}))
        per_sample = engine_only(loaded, recipes, data, frames, window, args.device, True)
        together = float(np.mean(per_sample))
        print(json.dumps({"measure": "engine_only_one_call", **spread(per_sample)}))
    for index, variant in enumerate(args.variants.split(",")):
        with VARIANTS[variant]():
            # Warm-up, the one pass over every sample: kernels, a compiled graph for every shape
            # the timed runs meet, the tokenizer's caches.
            started = time.perf_counter()
            if index == 0 or not args.warm_once:
                shutil.rmtree(work / "warm", ignore_errors=True)
                run(recipes, options(work / "warm"), loaded=loaded)
            warm_s = time.perf_counter() - started
            print(json.dumps({"measure": "warm_up", "variant": variant, "s": round(warm_s, 1)}))
            rows = time_runs(args, loaded, recipes, options, work, count)
        if args.runs != "all":
            continue
        four = sum(rows[r.name] for r in recipes)
        summary = {
            "measure": "summary",
            "variant": variant,
            "shape": args.shape,
            "frames": frames,
            "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "samples": count,
            "compiled_layers": compiled,
            "warm_up_s": round(warm_s, 1),
            "engine_only_s": round(base, 4),
            "four_runs_s": round(four, 4),
            "one_pass_s": round(rows["one_pass"], 4),
            "four_runs_steady_s": round(sum(rows[f"{r.name}_steady"] for r in recipes), 4),
            "one_pass_steady_s": round(rows["one_pass_steady"], 4),
            "engine_only_one_call_s": round(together, 4),
            "four_runs_over_engine": round(four / base, 2),
            "one_pass_over_engine": round(rows["one_pass"] / together, 2),
            "four_runs_over_one_pass": round(four / rows["one_pass"], 2),
        }
        print(json.dumps(summary))
    if compiled:
        # Graphs past dynamo's recompile limit run eagerly: a long-lived process (four solo runs,
        # then a pass) must not pile up graphs. These counters are the process's so far.
        from torch._dynamo.utils import counters

        kept = ("stats", "frames", "recompiles", "graph_break")
        print(json.dumps({"measure": "dynamo", **{k: dict(counters[k]) for k in kept}}))
    if args.profile:
        shutil.rmtree(work / "profiled", ignore_errors=True)
        profiler = cProfile.Profile()
        profiler.enable()
        run(recipes, options(work / "profiled"), loaded=loaded)
        sync(args.device)
        profiler.disable()
        profiler.dump_stats(str(args.profile))
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(50)
    if args.trace:
        trace(args.trace, work, args.trace_samples, loaded, recipes, data, options, args.device)


def spread(seconds: list[float]) -> dict[str, float]:
    """Mean, min, median and max of per-sample seconds."""
    values = np.asarray(seconds)
    return {
        "s_per_sample": round(float(values.mean()), 4),
        "min": round(float(values.min()), 4),
        "median": round(float(np.median(values)), 4),
        "max": round(float(values.max()), 4),
    }


def time_runs(args, loaded, recipes, options, work: Path, count: int) -> dict[str, float]:
    """Seconds per sample of each recipe alone and of the four in one pass."""
    rows = {}
    for name, chosen in [*((r.name, [r]) for r in recipes), ("one_pass", recipes)]:
        if args.runs != "all" and name not in args.runs.split(","):
            continue
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        sync(args.device)
        cuda = args.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        stamps: list[float] = []
        with GpuBusy(args.device) as busy:
            started = time.perf_counter()
            run(
                chosen if name == "one_pass" else chosen[0],
                options(out),
                progress=lambda *_, stamps=stamps: stamps.append(time.perf_counter()),
                loaded=loaded,
            )
            sync(args.device)
            ended = time.perf_counter()
            seconds = (ended - started) / count
        rows[name] = seconds
        # Between the first and the last sample's records: per sample, without what a run pays
        # once (stores opened and summarised, the first sample's self-check).
        steady = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
        rows[f"{name}_steady"] = steady
        print(
            json.dumps(
                {
                    "measure": name,
                    "s_per_sample": round(seconds, 4),
                    "steady_s_per_sample": round(steady, 4),
                    "gpu_busy": busy.share,
                    "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                    if cuda
                    else None,
                    # What a run pays once: up to the first sample's record (stores opened,
                    # the first sample decoded, analysed alone) and after the last one's
                    # (stores closed and summarised).
                    "head_s": round(stamps[0] - started, 3),
                    "tail_s": round(ended - stamps[-1], 3),
                }
            )
        )
    return rows


# RunOptions fields a variant sets.
RUN_OPTIONS: dict[str, object] = {}

# Each variant patches one setting for the runs made under it (the engine reads them when made).
VARIANTS = {
    "default": contextlib.nullcontext,
    # The recompute's flat (side-by-side) calls compiled too, as before 2026-12-06.
    "compile_every_path": lambda: mock.patch.object(fast, "COMPILED_PATHS", ("batched", "flat")),
    # No sample in flight: each is read back before the next one's clean pass, as before
    # 2026-12-06.
    "one_sample_at_a_time": lambda: mock.patch.object(
        InFlight, "overlaps", property(lambda self: False)
    ),
    # The batched chunks bounded at k rows × suffix tokens on CUDA (16k: the default).
    **{
        f"token_budget_{k}k": functools.partial(
            mock.patch.dict, fast.DEFAULT_TOKEN_BUDGET, {"cuda": k * 1024}
        )
        for k in (16, 32, 64)
    },
    # Every row computes its layers itself: no row begins as a copy of another's stream
    # (engine/suffix.forks), as before the second session of 2026-12-06.
    "no_shared_layers": lambda: mock.patch.object(fast, "forks", lambda rows, num_layers: {}),
    "flush_10s": lambda: mock.patch.dict(RUN_OPTIONS, flush_seconds=10.0, flush_samples=64),
    # Side-by-side chunks of up to 2k suffix tokens (FLAT_TOKENS: 4k).
    "side_by_side_2k": lambda: mock.patch.object(fast, "FLAT_TOKENS", 2048),
    # Samples decoded and processed in line, no prefetch thread.
    "prefetch_0": lambda: mock.patch.dict(RUN_OPTIONS, prefetch=0),
    # The interpreter's thread switch interval at 0.1 ms (Python's default: 5 ms): how long the
    # main thread waits for the GIL when a background thread holds it.
    "switch_100us": lambda: switch_interval(1e-4),
}


@contextlib.contextmanager
def switch_interval(seconds: float):
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def trace(
    folder: Path, work: Path, samples: int, loaded, recipes, data: Path, options, device: str
) -> None:
    """torch.profiler over the one pass and over the engine alone (one call per sample), the
    same first `samples` samples, warm: Chrome traces (open in Perfetto) and op tables in
    `folder`; the samples' folder and the store in `work`."""
    import gzip

    from torch.profiler import ProfilerActivity, profile

    folder.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    clips = sorted((data / "video").rglob("*.mp4"))[:samples]
    subset = work / "trace_clips"
    shutil.rmtree(subset, ignore_errors=True)
    # The same samples for both: a TVBench folder holding only the first few clips' entries.
    for task_json in (data / "json").glob("*.json"):
        keep = {c.name for c in clips if c.parent.name == task_json.stem}
        entries = [e for e in json.loads(task_json.read_text()) if e["video"] in keep]
        if entries:
            (subset / "json").mkdir(parents=True, exist_ok=True)
            (subset / "json" / task_json.name).write_text(json.dumps(entries))
            (subset / "video").mkdir(parents=True, exist_ok=True)
            link = subset / "video" / task_json.stem
            if not link.exists():
                link.symlink_to((data / "video" / task_json.stem).resolve())
    subset_options = dataclasses.replace(options(work / "trace_store"), data=str(subset))
    window, frames = subset_options.sweep.window, loaded.adapter.default_frames
    runs = {
        "pass": lambda: run(recipes, subset_options, loaded=loaded),
        "engine": lambda: engine_only(
            loaded, recipes, subset, frames, window, device, together=True, rounds=1
        ),
    }
    for name, call in runs.items():
        shutil.rmtree(work / "trace_store", ignore_errors=True)
        sync(device)
        with profile(activities=activities) as prof:
            started = time.perf_counter()
            call()
            sync(device)
            wall = time.perf_counter() - started
        raw = folder / f"{name}_trace.json"
        prof.export_chrome_trace(str(raw))
        with open(raw, "rb") as src, gzip.open(f"{raw}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()
        averages = prof.key_averages()
        tables = [
            averages.table(sort_by=key, row_limit=30, max_name_column_width=60)
            for key in ("self_cpu_time_total", "self_device_time_total")
            if key == "self_cpu_time_total" or device.startswith("cuda")
        ]
        (folder / f"{name}_ops.txt").write_text(f"wall {wall:.3f} s\n\n" + "\n\n".join(tables))
        print(json.dumps({"measure": f"trace_{name}", "wall_s": round(wall, 3)}))


if __name__ == "__main__":
    main()
