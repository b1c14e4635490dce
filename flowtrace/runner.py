"""The runner owns data, device, batching, progress and storage; recipes say what to measure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import flowtrace
from flowtrace.data import (
    DataSource,
    Sample,
    SampleError,
    parse_data,
    read_samples,
    sample_frames,
    validate_sample,
)
from flowtrace.engine import ReferenceEngine, make_engine
from flowtrace.engine.masks import WINDOW_STYLES, default_window, sweep_layers
from flowtrace.errors import FlowtraceError
from flowtrace.measure import (
    AttentionMeasure,
    KnockoutMeasure,
    PathwayMeasure,
    ProbeMeasure,
    VideoLensMeasure,
    measure_clean,
    sample_cube,
)
from flowtrace.models import LoadedModel, load_model
from flowtrace.plots import chart_for, save_chart
from flowtrace.recipe import (
    AttentionMap,
    EffectivePathway,
    FlowMap,
    Knockout,
    Recipe,
    VideoLogitLens,
)
from flowtrace.scale.remote import remote_trace_kwargs, route_traces
from flowtrace.store import CubeStore, open_cube

SAMPLE_MODES = ("correct", "wrong", "all")
TOY_DATA = "toy"


@dataclass
class RunOptions:
    model: str = "toy"
    adapter: str | None = None
    data: str = TOY_DATA
    tasks: list[str] | None = None
    limit: int | None = None
    ratio: float | None = None  # seeded subset per task, as the reference's --test_ratio
    out: Path | None = None
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "sdpa"
    window: int | None = None
    window_style: str = "center"
    sweep: tuple[int, int] | None = None
    sample_mode: str = "correct"
    frames: int | None = None
    batch_size: int = 8
    engine: str = "fast"  # knockout path: fast (exact shortcut) or reference (full forwards)
    heads: str = "all"  # knockout in every head, in a list of heads ("0,3"), or each head alone
    seed: int = 0
    overwrite: bool = False
    plot: bool = True
    eval_only: bool = False
    random_ratio: float | None = None  # effective_pathway: random baseline's share of edges
    generate: int | None = None  # knockout recipes: greedy reply tokens (None: the recipe's own)
    pooling: str | None = None  # PLLaVA video pooling T-H-W (the reference's --pooling_shape)
    lora: str | None = None  # PEFT LoRA adapter folder, merged into the weights
    # Scale-out (docs/scale.md): where the samples run, and where each trace runs.
    executor: str = "serial"  # serial (this process) or ray (samples sharded over Ray actors)
    address: str | None = None  # Ray cluster to join ("auto", "ray://head:10001"); None: start one
    gpus_per_worker: float = 1.0  # Ray: GPUs per actor, each holding one model copy
    workers: int | None = None  # Ray: at most this many actors (default: one per GPU, else CPU)
    remote: bool = False  # run the traces on NDIF (API key from NDIF_API_KEY or nnsight's config)
    serve: str | None = None  # run the traces on a self-hosted nnsight server at this URL


@dataclass
class RunResult:
    store: Path
    figures: list[Path]
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    clean_accuracy: float = float("nan")
    task_accuracy: dict[str, float] = field(default_factory=dict)
    resumed: int = 0  # samples found already done in an existing store
    retried: int = 0  # samples sent again after the Ray worker running them died


def resolve_data(data: str) -> DataSource:
    """'toy', KIND:PATH, a folder (TVBench layout) or a name from the user's data.toml."""
    from flowtrace.toy import EMBEDDED_DATA

    if data == TOY_DATA:
        return DataSource(kind="tvbench", root=EMBEDDED_DATA, spec=data)
    try:
        return parse_data(data)
    except ValueError as err:
        raise FlowtraceError(str(err)) from None


def run(
    recipe: Recipe,
    options: RunOptions,
    progress: Callable[[int, int, str], None] | None = None,
    loaded: LoadedModel | None = None,
) -> RunResult:
    """Run a recipe over the dataset, writing one sample at a time to the store.

    `loaded` (a model already in memory) serves the serial executor; Ray workers load their own.
    """
    if options.sample_mode not in SAMPLE_MODES:
        raise FlowtraceError(
            f"--sample-mode {options.sample_mode}: choose {', '.join(SAMPLE_MODES)}"
        )
    if options.window_style not in WINDOW_STYLES:
        raise FlowtraceError(
            f"--window-style {options.window_style}: choose {', '.join(WINDOW_STYLES)}"
        )
    if options.limit is not None and options.limit < 1:
        raise FlowtraceError(f"--limit {options.limit}: must be at least 1")
    source = resolve_data(options.data)
    root = source.root
    try:
        samples = read_samples(
            source, tasks=options.tasks, limit=options.limit, ratio=options.ratio
        )
    except ValueError as err:
        raise FlowtraceError(str(err)) from None
    if not samples:
        raise FlowtraceError(f"--data {options.data}: no samples found")
    remote_trace_kwargs(options)  # refuse a bad --remote / --serve before loading anything
    if options.executor == "ray":
        from flowtrace.scale.ray_executor import run_on_ray

        out, resumed, retried = run_on_ray(recipe, options, root, samples, progress)
    elif options.executor == "serial":
        analysis = prepare_analysis(recipe, options, root, samples, loaded)
        out, resumed = _run_serial(analysis, samples, progress)
        retried = 0
    else:
        raise FlowtraceError(f"--executor {options.executor}: choose serial or ray")
    ds = open_cube(out)
    result = _summarise(ds, out, resumed)
    result.retried = retried
    if options.plot and result.counts["ok"]:
        result.figures = save_chart(chart_for(ds), out.with_suffix(""))
    return result


@dataclass
class Analysis:
    """What a process needs to analyse samples, built once: by the driver, or by each Ray worker."""

    options: RunOptions
    loaded: LoadedModel
    engine: ReferenceEngine
    measure: KnockoutMeasure | ProbeMeasure | PathwayMeasure | VideoLensMeasure | AttentionMeasure
    frames: int
    attrs: dict[str, str | int | float]  # the store's provenance
    out: Path
    open_ended: bool = False  # whether the recipe analyses open-ended samples


def prepare_analysis(
    recipe: Recipe,
    options: RunOptions,
    root: Path,
    samples: list[Sample],
    loaded: LoadedModel | None = None,
) -> Analysis:
    """Load the model (unless given), check the options against it, pick engine and measure."""
    torch.manual_seed(options.seed)
    recipe = _with_generate(recipe, options.generate)
    loaded = loaded or load_model(
        options.model,
        device=options.device,
        dtype=options.dtype,
        attn="eager" if isinstance(recipe, AttentionMap) else options.attn,
        adapter=options.adapter,
        pooling=options.pooling,
        lora=options.lora,
    )
    window = default_window(loaded.num_layers) if options.window is None else options.window
    if not 1 <= window <= loaded.num_layers:
        raise FlowtraceError(f"--window {window}: must be between 1 and {loaded.num_layers}")
    sweep_layers(loaded.num_layers, options.sweep)  # refuse a bad --sweep before any work
    frames = options.frames or loaded.adapter.default_frames
    # Only knockouts have a fast path; the other recipes read the clean pass alone.
    knocks_out = isinstance(recipe, Knockout | EffectivePathway | FlowMap) and not options.eval_only
    # Generation has no shortcut (DESIGN §4): its replies run the reference path.
    generates = isinstance(recipe, Knockout) and recipe.generate > 0
    engine_name = options.engine if knocks_out and not generates else "reference"
    trace_kwargs, trace_target = remote_trace_kwargs(options)
    if trace_kwargs and generates:
        raise FlowtraceError(
            f"--generate {recipe.generate} with --remote/--serve: a reply's steps share a K/V "
            "cache that would stay on the server between traces; generate locally, or pass "
            "--generate 0 for the first-token scores alone"
        )
    if trace_kwargs:
        # Only whole nnsight traces travel to a server; the fast engine runs modules itself.
        engine_name = "reference"
    engine = make_engine(engine_name, loaded, options.batch_size)
    route_traces(loaded, trace_kwargs)
    out = options.out or _default_out(recipe, loaded, options.data)
    attrs = _provenance(recipe, loaded, options, root, window, frames, engine.name)
    attrs.update(executor=options.executor, traces=trace_target)
    measure = _measure_for(recipe, loaded, options, window, samples)
    # Recipes that read the answer token at the last position or the video tokens take
    # open-ended samples (the reference answer's first token); letter-scoring ones do not.
    open_ended = isinstance(recipe, Knockout | FlowMap | VideoLogitLens)
    return Analysis(options, loaded, engine, measure, frames, attrs, out, open_ended)


def analyse_sample(analysis: Analysis, sample: Sample) -> xr.Dataset:
    """One sample's cube; the serial loop and every Ray worker call exactly this."""
    cube = analysis.measure.empty(sample_cube(sample))
    try:
        validate_sample(sample, allow_open_ended=analysis.open_ended)
        video = sample_frames(sample, analysis.frames)  # its bound and the benchmark's rule
        prepared = analysis.loaded.adapter.prepare(analysis.loaded, sample, video)
        clean = measure_clean(analysis.loaded, analysis.engine, prepared, sample, cube)
        if analysis.options.eval_only:
            cube.coords["status"][:] = "ok"
        elif _excluded(analysis.options.sample_mode, clean.correct):
            cube.coords["status"][:] = "skipped"
            verdict = "right" if clean.correct else "wrong"
            cube.coords["reason"][:] = (
                f"--sample-mode {analysis.options.sample_mode}: clean answer is {verdict}"
            )
        else:
            analysis.measure.fill(analysis.engine, prepared, clean, cube)
            cube.coords["engine"][:] = "+".join(sorted(analysis.engine.used))
            cube.coords["status"][:] = "ok"
    except SampleError as err:
        cube.coords["status"][:] = "failed"
        cube.coords["reason"][:] = str(err)
    return cube


def _run_serial(
    analysis: Analysis,
    samples: list[Sample],
    progress: Callable[[int, int, str], None] | None,
) -> tuple[Path, int]:
    store = CubeStore(analysis.out, analysis.attrs, overwrite=analysis.options.overwrite)
    resumed = 0
    for index, sample in enumerate(samples):
        if sample.id in store.done:
            resumed += 1
            if progress:
                progress(index + 1, len(samples), "resumed")
            continue
        cube = analyse_sample(analysis, sample)
        store.append(cube)
        if progress:
            progress(index + 1, len(samples), str(cube["status"].values[0]))
    return analysis.out, resumed


def _summarise(ds: xr.Dataset, out: Path, resumed: int) -> RunResult:
    """Counts and accuracies from the store itself, resumed samples included."""
    status = [str(x) for x in ds["status"].values]
    result = RunResult(store=out, figures=[], resumed=resumed)
    result.counts.update(status)
    result.reasons.update(
        str(r) for r, s in zip(ds["reason"].values, status, strict=True) if s == "failed"
    )
    answered = np.asarray(status) != "failed"
    if answered.any():
        correct = ds["clean_correct"].values[answered]
        tasks = np.asarray([str(t) for t in ds["task"].values])[answered]
        result.clean_accuracy = 100 * float(correct.mean())
        result.task_accuracy = {
            t: 100 * float(correct[tasks == t].mean()) for t in dict.fromkeys(tasks)
        }
    return result


def _heads(spec: str, num_heads: int) -> tuple[int, ...] | str | None:
    """`--heads`: all (None), sweep, or a comma list of head indices cut together."""
    if spec in ("all", "sweep"):
        return None if spec == "all" else spec
    try:
        heads = tuple(sorted({int(h) for h in spec.split(",")}))
    except ValueError:
        heads = ()
    if not heads or not all(0 <= h < num_heads for h in heads):
        raise FlowtraceError(
            f"--heads {spec}: use all, sweep, or head indices such as 0,5,7 "
            f"(this model has heads 0-{num_heads - 1})"
        )
    return heads


def _with_generate(recipe: Recipe, generate: int | None) -> Recipe:
    """The recipe with `--generate N` applied (knockout recipes only)."""
    if generate is None:
        return recipe
    if not isinstance(recipe, Knockout):
        raise FlowtraceError(
            f"--generate: recipe {recipe.name} is a {type(recipe).__name__}; greedy replies "
            "under knockout are for knockout recipes (e.g. recipes/open_ended.py)"
        )
    if generate < 0:
        raise FlowtraceError(f"--generate {generate}: give the reply's length in tokens (≥ 0)")
    return dataclasses.replace(recipe, generate=generate)


def _excluded(sample_mode: str, correct: bool) -> bool:
    return (sample_mode == "correct" and not correct) or (sample_mode == "wrong" and correct)


def _measure_for(
    recipe: Recipe, loaded: LoadedModel, options: RunOptions, window: int, samples: list[Sample]
) -> KnockoutMeasure | ProbeMeasure | PathwayMeasure | VideoLensMeasure | AttentionMeasure:
    if isinstance(recipe, FlowMap):
        frames = options.frames or loaded.adapter.default_frames
        num_frames = loaded.adapter.video_grid(loaded, frames)[0]
        most = max(samples, key=lambda s: len(s.candidates))
        recipe = recipe.knockout(num_frames, most.option_letters())
    if isinstance(recipe, Knockout):
        heads = _heads(options.heads, loaded.num_heads)
        return KnockoutMeasure(recipe, loaded, window, options.window_style, options.sweep, heads)
    if isinstance(recipe, AttentionMap):
        frames = options.frames or loaded.adapter.default_frames
        num_frames = loaded.adapter.video_grid(loaded, frames)[0]
        return AttentionMeasure(recipe, loaded, recipe.group_names(num_frames))
    if isinstance(recipe, VideoLogitLens):
        frames = options.frames or loaded.adapter.default_frames
        return VideoLensMeasure(recipe, loaded, loaded.adapter.video_grid(loaded, frames))
    if isinstance(recipe, EffectivePathway):
        if options.random_ratio is not None:
            if not 0 <= options.random_ratio <= 1:
                raise FlowtraceError(f"--random-ratio {options.random_ratio}: must be in [0, 1]")
            recipe = dataclasses.replace(recipe, random_ratio=options.random_ratio)
        return PathwayMeasure(recipe, loaded, options.seed)
    letters = max(len(s.candidates) for s in samples)
    return ProbeMeasure(recipe, loaded, letters)


def _default_out(recipe: Recipe, loaded: LoadedModel, data: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = Path(loaded.model_id).name or "model"
    data_name = Path(data.split(":", 1)[-1]).name or "data"
    return Path("results") / recipe.name / f"{model}__{data_name}__{stamp}.zarr"


def _provenance(
    recipe: Recipe,
    loaded: LoadedModel,
    options: RunOptions,
    root: Path,
    window: int,
    frames: int,
    engine: str,
) -> dict[str, str | int | float]:
    import nnsight
    import transformers

    return {
        "recipe": recipe.name,
        "recipe_kind": type(recipe).__name__,
        "recipe_title": recipe.title,
        "recipe_source": recipe.source_file,
        "edges": json.dumps(recipe.edge_map()) if isinstance(recipe, Knockout) else "{}",
        "generate": recipe.generate if isinstance(recipe, Knockout) else 0,
        "eval_only": int(options.eval_only),
        "overlay_layers": json.dumps(getattr(recipe, "overlay_layers", [])),
        "model": loaded.model_id,
        "model_revision": loaded.revision,
        "adapter": loaded.adapter.name,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "attn": loaded.attn,
        "data": options.data,
        "data_root": str(root),
        "data_kind": resolve_data(options.data).kind,
        "split": "toy held-out" if options.data == TOY_DATA else root.name,
        "tasks": json.dumps(options.tasks or []),
        "limit": options.limit or 0,
        "ratio": options.ratio or 0,
        "frames": frames,
        "pooling": "-".join(map(str, loaded.adapter.video_grid(loaded, frames))),
        "lora": options.lora or "",
        "window": window,
        "window_style": options.window_style,
        "sweep": json.dumps(list(options.sweep) if options.sweep else []),
        "sample_mode": options.sample_mode,
        "heads": options.heads,
        "engine": engine,
        "seed": options.seed,
        "flowtrace_version": flowtrace.__version__,
        "git_commit": _git_commit(),
        "device": _device_name(loaded.device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "nnsight": getattr(nnsight, "__version__", "unknown"),
        "python": platform.python_version(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _git_commit() -> str:
    """The checkout's commit; in an image without .git, the one it was built from."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(flowtrace.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return commit or os.environ.get("FLOWTRACE_GIT_COMMIT", "unknown")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"
