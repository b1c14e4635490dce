"""A run's options as the user gave them, and every default settled once against the model."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flowtrace.data import DataSource, parse_data
from flowtrace.data.sources import TOY_DATA
from flowtrace.errors import DataError, OptionError
from flowtrace.sweep import Sweep

SAMPLE_MODES = ("correct", "wrong", "all")
ENGINES = ("fast", "reference")
EXECUTORS = ("serial", "ray")

# Bounds refused before the model loads (the model's context bounds them again in `settle`):
# beyond them a run spends minutes decoding, processing or generating before any message.
MAX_FRAMES = 1024  # frames per video; the adapters' defaults are 8 to 32
MAX_GENERATE = 8192  # reply tokens per condition; open_ended.py asks 32
SEED_RANGE = (0, 2**32 - 1)  # what torch, numpy and Ray each accept as a seed


@dataclass
class RunOptions:
    model: str = "toy"
    adapter: str | None = None
    data: str = TOY_DATA
    tasks: list[str] | None = None
    limit: int | None = None
    ratio: float | None = None  # seeded subset per task, as the reference's --test_ratio
    out: Path | None = None  # one recipe: the store; several: the folder of NAME.zarr stores
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "sdpa"
    sweep: Sweep = Sweep()  # window, window style, sweep range and heads (flowtrace.sweep)
    sample_mode: str = "correct"
    frames: int | None = None
    batch_size: int = 8
    engine: str = "fast"  # knockout path: fast (exact shortcut) or reference (full forwards)
    # fast engine: torch.compile its recomputed layers (None: on CUDA; FLOWTRACE_COMPILE overrides)
    compile: bool | None = None
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
    # The pipeline: samples decoded ahead of the model, and how often the store is written.
    # samples decoded and processed ahead (0: in line; None: 0 where the model computes on this
    # machine's CPU, else 2)
    prefetch: int | None = None
    flush_samples: int = 16  # write the store every this many samples…
    flush_seconds: float = 2.0  # …or this many seconds, whichever comes first
    # Provenance names the data root and videos as the user did (relative); True: absolute paths.
    absolute_paths: bool = False


def check_options(options: RunOptions) -> None:
    """What can be refused before anything is read or loaded."""
    choices = {
        "sample_mode": (options.sample_mode, SAMPLE_MODES),
        "engine": (options.engine, ENGINES),
        "executor": (options.executor, EXECUTORS),
    }
    if not isinstance(options.sweep, Sweep):  # RunOptions(window=…, sweep=(a, b)) before
        raise OptionError(
            "sweep", f"{options.sweep!r}: give a Sweep(window=…, style=…, layers=…, heads=…)"
        )
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise OptionError(name, f"{value!r}: choose {', '.join(allowed)}")
    at_least_one = {
        "limit": options.limit,
        "frames": options.frames,
        "batch_size": options.batch_size,
        "flush_samples": options.flush_samples,
    }
    for name, value in at_least_one.items():
        if value is not None and value < 1:
            raise OptionError(name, f"{value}: must be at least 1")
    at_most = {"frames": (options.frames, MAX_FRAMES), "generate": (options.generate, MAX_GENERATE)}
    for name, (value, bound) in at_most.items():
        if value is not None and value > bound:
            raise OptionError(
                name,
                f"{value}: give at most {bound} (flowtrace's bound: beyond it a run spends "
                "minutes before its first sample; the model's context may allow fewer)",
            )
    low, high = SEED_RANGE
    if not isinstance(options.seed, int) or not low <= options.seed <= high:
        raise OptionError("seed", f"{options.seed}: give a whole number from {low} to {high}")
    if options.prefetch is not None and options.prefetch < 0:
        raise OptionError("prefetch", f"{options.prefetch}: must be 0 or more")
    if options.flush_seconds <= 0:
        raise OptionError("flush_seconds", f"{options.flush_seconds}: must be above 0")


def resolve_data(data: str) -> DataSource:
    """'toy', KIND:PATH, a folder (TVBench layout) or a name from the user's data.toml."""
    try:
        return parse_data(data)
    except ValueError as err:
        raise DataError(str(err)) from None


@dataclass(frozen=True)
class Settled:
    """The defaults of a run, decided once against the loaded model."""

    sweep: Sweep  # checked against the model's layers and heads, its window settled
    frames: int
    num_frames: int  # frames the model sees after temporal pooling
    prefetch: int  # samples decoded and processed ahead of the model


# Samples decoded ahead while the model computes elsewhere (a GPU, a server). On a GPU decoding
# in line made the host-bound short sweeps 1.1-1.5x slower. Where the model computes on the
# local CPU its forward already uses every core, and a decoding thread beside it only competes:
# on a 2-core CPU the default toy run took 0.83x the wall time with none
# (benchmarks/runs/2026-12-06-cpu-prefetch and 2026-12-06-h200-fourth-session).
PREFETCH_BESIDE_THE_MODEL = 2


def settle(
    options: RunOptions,
    num_layers: int,
    num_heads: int,
    default_frames: int,
    video_frames,
    computes_on_this_cpu: bool,
    video_tokens: Callable[[int], int] | None = None,
    context: int | None = None,
) -> Settled:
    """The sweep (the reference's window unless given), frames (the adapter's unless given),
    samples prefetched (none where the model computes on this machine's CPU, unless given).

    `context`: the positions the model reads (its config's max_position_embeddings), which the
    video tokens of `frames` (`video_tokens`) and a reply of `generate` tokens must leave room in;
    each sample's whole prompt is checked against it when it is prepared."""
    frames = options.frames or default_frames
    if context is not None and video_tokens is not None:
        check_context(options, frames, default_frames, video_tokens(frames), context)
    prefetch = options.prefetch
    if prefetch is None:
        prefetch = 0 if computes_on_this_cpu else PREFETCH_BESIDE_THE_MODEL
    return Settled(
        options.sweep.resolve(num_layers, num_heads), frames, video_frames(frames), prefetch
    )


def check_context(
    options: RunOptions, frames: int, default_frames: int, tokens: int, context: int
) -> None:
    """Refuse frames or a reply length that cannot fit the model's context with any prompt."""
    where = f"the model's context of {context} tokens (max_position_embeddings in its config)"
    if tokens >= context:
        given = "" if options.frames else " (the adapter's default)"
        fit = max(1, frames * (context // 2) // tokens)
        raise OptionError(
            "frames",
            f"{frames}{given}: {frames} frames make {tokens} video tokens, which leave no room "
            f"for the question in {where}; give fewer frames (about {fit} leave half the context "
            "to the text)",
        )
    if options.generate and tokens + options.generate >= context:
        raise OptionError(
            "generate",
            f"{options.generate}: a reply that long after {tokens} video tokens runs past "
            f"{where}; give at most {context - tokens - 1} (less the question's tokens)",
        )


def default_out(recipe_name: str, model_id: str, data: str, folder: Path | None = None) -> Path:
    """results/RECIPE/MODEL__DATA__STAMP.zarr, or FOLDER/RECIPE.zarr for a pass of several."""
    if folder is not None:
        return folder / f"{recipe_name}.zarr"
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = Path(model_id).name or "model"
    data_name = Path(data.split(":", 1)[-1]).name or "data"
    return Path("results") / recipe_name / f"{model}__{data_name}__{stamp}.zarr"
