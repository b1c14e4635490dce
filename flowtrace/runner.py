"""The runner owns data, device, batching, progress and storage; recipes say what to measure."""

from __future__ import annotations

import datetime as dt
import json
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
from flowtrace.data import Sample, SampleError, read_frames, read_samples, validate_sample
from flowtrace.engine import ReferenceEngine
from flowtrace.engine.masks import WINDOW_STYLES, default_window, sweep_layers
from flowtrace.errors import FlowtraceError
from flowtrace.models import LoadedModel, Prepared, load_model
from flowtrace.plots import knockout_chart, save_chart
from flowtrace.recipe import Knockout
from flowtrace.store import CubeStore

SAMPLE_MODES = ("correct", "wrong", "all")
TOY_DATA = "toy"


@dataclass
class RunOptions:
    model: str = "toy"
    adapter: str | None = None
    data: str = TOY_DATA
    tasks: list[str] | None = None
    limit: int | None = None
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
    seed: int = 0
    overwrite: bool = False
    plot: bool = True


@dataclass
class RunResult:
    store: Path
    figures: list[Path]
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    clean_accuracy: float = float("nan")


def resolve_data(data: str) -> Path:
    from flowtrace.toy import EMBEDDED_DATA

    if data == TOY_DATA:
        return EMBEDDED_DATA
    root = Path(data.split(":", 1)[1] if data.startswith(("synth:", "tvbench:")) else data)
    if not root.is_dir():
        raise FlowtraceError(
            f"--data {data}: no such folder; pass 'toy' or a folder with json/<task>.json and "
            "video/<task>/"
        )
    return root


def run(
    recipe: Knockout,
    options: RunOptions,
    progress: Callable[[int, int, str], None] | None = None,
    loaded: LoadedModel | None = None,
) -> RunResult:
    """Run a knockout recipe over the dataset, writing one sample at a time to the store."""
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
    if options.out is not None and options.out.exists() and not options.overwrite:
        raise FlowtraceError(
            f"--out {options.out} already exists; pass --overwrite to replace it or choose "
            "another --out"
        )
    root = resolve_data(options.data)
    try:
        samples = read_samples(root, tasks=options.tasks, limit=options.limit)
    except ValueError as err:
        raise FlowtraceError(str(err)) from None
    if not samples:
        raise FlowtraceError(f"--data {options.data}: no samples found")
    torch.manual_seed(options.seed)
    loaded = loaded or load_model(
        options.model,
        device=options.device,
        dtype=options.dtype,
        attn=options.attn,
        adapter=options.adapter,
    )
    window = default_window(loaded.num_layers) if options.window is None else options.window
    if not 1 <= window <= loaded.num_layers:
        raise FlowtraceError(f"--window {window}: must be between 1 and {loaded.num_layers}")
    sweep_layers(loaded.num_layers, options.sweep)  # refuse a bad --sweep before any work
    frames = options.frames or loaded.adapter.default_frames
    engine = ReferenceEngine(loaded, batch_size=options.batch_size)
    out = options.out or _default_out(recipe, loaded, options.data)
    attrs = _provenance(recipe, loaded, options, root, window, frames, engine.name)
    store = CubeStore(out, attrs, overwrite=options.overwrite)
    result = RunResult(store=out, figures=[])
    labels = recipe.labels()
    sources = list(dict.fromkeys(s for s, _ in labels))
    targets = list(dict.fromkeys(t for _, t in labels))
    layers = np.arange(loaded.num_layers)
    clean_hits: list[bool] = []
    for index, sample in enumerate(samples):
        cube = _empty_cube(sample, layers, sources, targets)
        try:
            validate_sample(sample)
            video = read_frames(sample.video, frames, bound=sample.bound)
            prepared = loaded.adapter.prepare(loaded, sample, video)
            _measure(recipe, loaded, engine, prepared, cube, options, window)
        except SampleError as err:
            cube.coords["status"][:] = "failed"
            cube.coords["reason"][:] = str(err)
        status = str(cube["status"].values[0])
        result.counts[status] += 1
        if status == "failed":
            result.reasons[str(cube["reason"].values[0])] += 1
        else:
            clean_hits.append(bool(cube["clean_correct"].values[0]))
        store.append(cube)
        if progress:
            progress(index + 1, len(samples), status)
    if clean_hits:
        result.clean_accuracy = 100 * float(np.mean(clean_hits))
    if options.plot and result.counts["ok"]:
        ds = xr.open_zarr(out)
        stem = out.with_suffix("")
        result.figures = save_chart(knockout_chart(ds, recipe.title), stem)
    return result


def _measure(
    recipe: Knockout,
    loaded: LoadedModel,
    engine: ReferenceEngine,
    prepared: Prepared,
    cube: xr.Dataset,
    options: RunOptions,
    window: int,
) -> None:
    layout = prepared.layout
    clean = engine.clean(prepared.inputs)
    pred = int(clean.argmax())
    true_id = loaded.letter_id(layout.true_letter)
    pred_text = loaded.decode(pred)
    correct = pred_text.strip().lower() == layout.true_letter.lower()
    cube.coords["clean_pred"][:] = pred_text
    cube.coords["clean_correct"][:] = correct
    cube["clean_prob_pred"][:] = float(clean[pred])
    cube["clean_prob_true"][:] = float(clean[true_id])
    if (options.sample_mode == "correct" and not correct) or (
        options.sample_mode == "wrong" and correct
    ):
        cube.coords["status"][:] = "skipped"
        verdict = "right" if correct else "wrong"
        cube.coords["reason"][:] = f"--sample-mode {options.sample_mode}: clean answer is {verdict}"
        return
    conditions = recipe.conditions(
        layout, loaded.num_layers, window, options.window_style, options.sweep
    )
    sources, targets = list(cube["source"].values), list(cube["target"].values)
    probs = engine.knockout(prepared.inputs, [c.knockout for c in conditions])
    p_clean_pred, p_clean_true = float(clean[pred]), float(clean[true_id])
    for condition, row in zip(conditions, probs, strict=True):
        pair = {
            "source": sources.index(condition.source),
            "target": targets.index(condition.target),
        }
        at = {"sample": 0, "layer": condition.layer, **pair}
        new = int(row.argmax())
        new_text = loaded.decode(new)
        p_pred, p_true = float(row[pred]), float(row[true_id])
        cube["prob_pred"][at] = p_pred
        cube["prob_true"][at] = p_true
        cube["rel_change_pred"][at] = 100 * (p_pred - p_clean_pred) / p_clean_pred
        cube["rel_change_true"][at] = 100 * (p_true - p_clean_true) / p_clean_true
        cube["new_pred"][at] = new_text
        cube["correct"][at] = new_text.strip().lower() == layout.true_letter.lower()
        cube["blocked_edges"][{"sample": 0, **pair}] = int(condition.knockout.blocked.sum())
    cube.coords["status"][:] = "ok"


def _empty_cube(
    sample: Sample, layers: np.ndarray, sources: list[str], targets: list[str]
) -> xr.Dataset:
    dims4 = ("sample", "layer", "source", "target")
    shape4 = (1, len(layers), len(sources), len(targets))
    nan = np.full(shape4, np.nan, dtype=np.float32)
    letters = sample.option_letters() if sample.candidates else ()
    try:
        answer_letter = letters[sample.answer_index()]
    except (SampleError, IndexError):
        answer_letter = ""

    def per_sample(value: object) -> tuple[str, np.ndarray]:
        return ("sample", np.asarray([value], dtype=object if isinstance(value, str) else None))

    return xr.Dataset(
        {
            "prob_pred": (dims4, nan.copy()),
            "prob_true": (dims4, nan.copy()),
            "rel_change_pred": (dims4, nan.copy()),
            "rel_change_true": (dims4, nan.copy()),
            "new_pred": (dims4, np.full(shape4, "", dtype=object)),
            "correct": (dims4, np.zeros(shape4, dtype=bool)),
            "blocked_edges": (
                ("sample", "source", "target"),
                np.zeros((1, len(sources), len(targets)), dtype=np.int64),
            ),
            "clean_prob_pred": ("sample", np.full(1, np.nan, dtype=np.float32)),
            "clean_prob_true": ("sample", np.full(1, np.nan, dtype=np.float32)),
        },
        coords={
            "sample": np.asarray([sample.id], dtype=object),
            "layer": layers,
            "source": np.asarray(sources, dtype=object),
            "target": np.asarray(targets, dtype=object),
            "task": per_sample(sample.task),
            "video": per_sample(str(sample.video)),
            "question": per_sample(sample.question),
            "candidates": per_sample(json.dumps(list(sample.candidates))),
            "answer": per_sample(sample.answer),
            "answer_letter": per_sample(answer_letter),
            "clean_pred": per_sample(""),
            "clean_correct": ("sample", np.zeros(1, dtype=bool)),
            "status": per_sample("failed"),
            "reason": per_sample(""),
        },
    )


def _default_out(recipe: Knockout, loaded: LoadedModel, data: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = Path(loaded.model_id).name or "model"
    data_name = Path(data.split(":", 1)[-1]).name or "data"
    return Path("results") / recipe.name / f"{model}__{data_name}__{stamp}.zarr"


def _provenance(
    recipe: Knockout,
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
        "recipe_source": recipe.source_file,
        "edges": json.dumps(recipe.edge_map()),
        "model": loaded.model_id,
        "model_revision": loaded.revision,
        "adapter": loaded.adapter.name,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "attn": loaded.attn,
        "data": options.data,
        "data_root": str(root),
        "split": "toy held-out" if options.data == TOY_DATA else root.name,
        "tasks": json.dumps(options.tasks or []),
        "limit": options.limit or 0,
        "frames": frames,
        "pooling": "-".join(map(str, loaded.adapter.video_grid(loaded, frames))),
        "window": window,
        "window_style": options.window_style,
        "sweep": json.dumps(list(options.sweep) if options.sweep else []),
        "sample_mode": options.sample_mode,
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
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(flowtrace.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"
