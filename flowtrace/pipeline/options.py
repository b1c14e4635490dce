"""A run's settings: each declared once (its help, CLI panel, choices and bound), checked in one
place (`check_options`), and every default settled once against the model (`settle`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from flowtrace.data import DataSource, parse_data
from flowtrace.data.sources import TOY_DATA
from flowtrace.errors import DataError, OptionError
from flowtrace.tokens.sweep import WINDOW_STYLES, Sweep

# Bounds refused before the model loads (the model's context bounds them again in `settle`):
# beyond them a run spends minutes decoding, processing or generating before any message.
MAX_FRAMES = 1024  # frames per video; the adapters' defaults are 8 to 32
MAX_GENERATE = 8192  # reply tokens per condition; open_ended.py asks 32
SEED_RANGE = (0, 2**32 - 1)  # what torch, numpy and Ray each accept as a seed

# The command line's panels, in the order `flowtrace run --help` shows them.
PANELS = ("Model", "Data", "Sweep", "Analysis", "Engine", "Outputs", "Scale")
SETTING = "flowtrace.setting"  # the metadata key of a field's `Setting`


@dataclass(frozen=True)
class Setting:
    """One setting of a run, declared once: the CLI builds its option from this, `check_options`
    checks its choices and lower bound. Text names other settings as `name=…` or "the NAME
    setting", never as a flag (the CLI says those as flags)."""

    name: str  # the RunOptions field (a sweep part: the Sweep field)
    help: str
    panel: str = ""  # "": not offered on the command line
    flag: str = ""  # the command line's name where it is not `name` (tasks: --task)
    choices: tuple[str, ...] = ()
    min: int | None = None  # the least value (None: any)
    toggle: bool = False  # a --name/--no-name pair
    show_default: bool = True
    default: Any = None
    # The value's type as the command line reads it (None: the field's own)
    type: Any = None

    @property
    def cli_name(self) -> str:
        return self.flag or self.name


def _setting(default: Any, help: str, panel: str = "", **how: Any) -> Any:
    """A RunOptions field with its declaration (see `Setting`)."""
    return field(default=default, metadata={SETTING: {"help": help, "panel": panel, **how}})


# The four fields of one `Sweep`, each its own option on the command line.
SWEEP_PARTS = (
    Setting(
        "window",
        "Layers blocked per sweep step. Default: 9, the reference's window, for models of 16 "
        "layers or more; shallower ones (the toy) get 9/32 of their depth, odd. The store "
        "records the rule (window_default).",
        "Sweep",
        type=int | None,
    ),
    Setting(
        "style",
        "Where the blocked window sits around each sweep layer (as the paper).",
        "Sweep",
        flag="window_style",
        choices=WINDOW_STYLES,
        default="center",
    ),
    Setting(
        "layers",
        "Sweep only layers START-STOP (stop excluded).",
        "Sweep",
        flag="sweep",
        type=str | None,
    ),
    Setting(
        "heads",
        "Knockout in every attention head (all), only in listed heads (0,5,7), or in each head "
        "alone (sweep: the cube gains a head dim).",
        "Sweep",
        default="all",
        type=str,
    ),
)


@dataclass
class RunOptions:
    """A run's settings as the user gave them; each field declares its help, panel, choices and
    bounds (`settings()`), from which the CLI's `run` options are built."""

    # Model
    model: str = _setting(
        "toy",
        "'toy' (embedded), 'planted' (the toy with planted routes), a local checkpoint folder or "
        "a Hugging Face id.",
        "Model",
    )
    adapter: str | None = _setting(
        None, "Force an adapter instead of the config's choice.", "Model"
    )
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N.", "Model")
    dtype: str = _setting(
        "auto",
        "auto: bfloat16 on GPU, float32 on CPU.",
        "Model",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    attn: str = _setting("sdpa", "Attention implementation.", "Model", choices=("sdpa", "eager"))
    pooling: str | None = _setting(
        None,
        "PLLaVA video pooling T-H-W (the reference's --pooling_shape; default 8-12-12).",
        "Model",
    )
    lora: str | None = _setting(
        None, "PEFT LoRA adapter folder, merged into the weights (needs peft).", "Model"
    )
    random_weights: bool = _setting(
        False,
        "Build the model from its config.json with seeded random weights, no checkpoint: a "
        "full-size dry run of memory and speed before downloading weights (answers are noise).",
        "Model",
    )
    # Data
    data: str = _setting(
        TOY_DATA,
        "'toy' (embedded held-out split), KIND:PATH (tvbench, tvbench-open, mvbench, tomato, "
        "longvideobench, videomme, vcgbench), a TVBench-layout folder, or a name from "
        "~/.config/flowtrace/data.toml (docs/data.md).",
        "Data",
    )
    tasks: list[str] | None = _setting(
        None, "Task name or index; repeat for several. Default all.", "Data", flag="task"
    )
    limit: int | None = _setting(
        None, "At most this many samples, spread over the tasks.", "Data", min=1
    )
    ratio: float | None = _setting(
        None,
        "Seeded random subset of each task, as the reference's --test_ratio: a count per task "
        "(≥ 1) or a share (0–1).",
        "Data",
    )
    frames: int | None = _setting(None, "Frames per video (adapter default).", "Data", min=1)
    # Sweep: window, window style, sweep range and heads, one value (flowtrace.tokens.sweep)
    sweep: Sweep = _setting(Sweep(), "", "Sweep", parts=SWEEP_PARTS)
    # Analysis
    sample_mode: str = _setting(
        "correct",
        "Analyse the samples the model answers right, wrong, or all.",
        "Analysis",
        choices=("correct", "wrong", "all"),
    )
    eval_only: bool = _setting(
        False, "Only the clean pass: accuracy per task, no knockout.", "Analysis"
    )
    generate: int | None = _setting(
        None,
        "Knockout recipes: also generate a greedy reply of up to N tokens, clean and under every "
        "knockout (reference engine; default: the recipe's own, 0 for most).",
        "Analysis",
    )
    random_ratio: float | None = _setting(
        None,
        "effective_pathway: random baseline cuts this share of edges per layer (default: the "
        "pathway's own budget).",
        "Analysis",
    )
    seed: int = _setting(0, "Seed for anything random.", "Analysis")
    # Engine
    engine: str = _setting(
        "fast",
        "Knockout path: fast (recomputes only what a knockout changes; same numbers) or "
        "reference (one full forward per condition).",
        "Engine",
        choices=("fast", "reference"),
    )
    # None: on CUDA (FLOWTRACE_COMPILE overrides)
    compile: bool | None = _setting(
        None,
        "Fast engine: run the recomputed layers through torch.compile (default: on CUDA, off on "
        "CPU; the first sample pays about a minute of compiling).",
        "Engine",
        toggle=True,
    )
    batch_size: int = _setting(
        8, "Reference engine: knockout conditions per forward.", "Engine", min=1
    )
    prefetch: int | None = _setting(
        None,
        "Samples decoded and processed ahead of the model, in a background thread (0: in line). "
        "Default: 2 on a GPU or server, 0 on CPU (where the model uses every core).",
        "Engine",
        min=0,
        show_default=False,
    )
    # Outputs
    out: Path | None = _setting(
        None,
        "Zarr store to write (with several recipes: a folder of RECIPE.zarr stores). Default "
        "results/RECIPE/….zarr",
        "Outputs",
    )
    overwrite: bool = _setting(
        False, "Replace an existing store at the out setting (default: resume it).", "Outputs"
    )
    # Scale-out (docs/scale.md): where the samples run, and where each trace runs.
    executor: str = _setting(
        "serial",
        "serial (this process) or ray: samples sharded over Ray workers, one model per GPU "
        "(docs/scale.md).",
        "Scale",
        choices=("serial", "ray"),
    )
    address: str | None = _setting(
        None, "Ray: cluster to join ('auto' on a node of it); default: start one.", "Scale"
    )
    gpus_per_worker: float = _setting(
        1.0, "Ray: GPUs per worker (2 for a model that needs two).", "Scale"
    )
    workers: int | None = _setting(
        None, "Ray: at most this many workers (default: every GPU).", "Scale", min=1
    )
    remote: bool = _setting(
        False, "Run the traces on NDIF (a model it hosts; key from NDIF_API_KEY).", "Scale"
    )
    serve: str | None = _setting(
        None,
        "Run the traces on your nnsight server at this URL; 'local' simulates one in this "
        "process (a check that the recipe's traces serialize).",
        "Scale",
    )
    # Python only: figures, how often the store is written, how paths are recorded.
    plot: bool = _setting(
        True, "Draw each store's figure beside it after the run (plots.run_figures)."
    )
    flush_samples: int = _setting(16, "Write the store every this many samples…", min=1)
    flush_seconds: float = _setting(2.0, "…or this many seconds, whichever comes first.")
    absolute_paths: bool = _setting(
        False,
        "Provenance names the data root and videos as the user did (relative); True: absolute "
        "paths.",
    )


def settings() -> list[Setting]:
    """Every declared setting of a run, in RunOptions' order (a sweep's parts in its place)."""
    hints = get_type_hints(RunOptions)
    found = []
    for item in fields(RunOptions):
        declared = dict(item.metadata[SETTING])
        parts = declared.pop("parts", ())
        if parts:
            found.extend(parts)
            continue
        declared.setdefault("type", hints[item.name])
        found.append(Setting(item.name, default=item.default, **declared))
    return found


def setting(name: str) -> Setting:
    """The declaration of one setting by its name (a RunOptions field or a sweep part)."""
    return next(s for s in settings() if s.name == name)


def check_options(options: RunOptions, recipes: int = 1) -> None:
    """Every check of a run's settings that needs neither the data nor the model, in one place
    (a `Sweep` checks its own fields when made); each error names its setting. `recipes`: how
    many recipes run in the pass."""
    if not isinstance(options.sweep, Sweep):  # RunOptions(window=…, sweep=(a, b)) before
        raise OptionError(
            "sweep", f"{options.sweep!r}: give a Sweep(window=…, style=…, layers=…, heads=…)"
        )
    declared = [s for s in settings() if hasattr(options, s.name)]
    for each in declared:
        value = getattr(options, each.name)
        if each.choices and value not in each.choices:
            raise OptionError(each.name, f"{value!r}: choose {', '.join(each.choices)}")
        if each.min is not None and value is not None and value < each.min:
            bound = "0 or more" if each.min == 0 else f"at least {each.min}"
            raise OptionError(each.name, f"{value}: must be {bound}")
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
    if options.flush_seconds <= 0:
        raise OptionError("flush_seconds", f"{options.flush_seconds}: must be above 0")
    if options.generate is not None and options.generate < 0:
        raise OptionError(
            "generate", f"{options.generate}: give the reply's length in tokens (≥ 0)"
        )
    if options.random_ratio is not None and not 0 <= options.random_ratio <= 1:
        raise OptionError("random_ratio", f"{options.random_ratio}: must be in [0, 1]")
    _check_where_traces_run(options)
    _check_ray(options, recipes)


def _check_where_traces_run(options: RunOptions) -> None:
    """remote (NDIF) or serve (a server of the user's, or 'local' simulated): one of them, for a
    model a server can name, in this process."""
    if not options.remote and options.serve is None:
        return
    if options.remote and options.serve is not None:
        raise OptionError(
            "serve", f"{options.serve} with remote=True: choose one (NDIF, or your own server)"
        )
    given = "remote=True" if options.remote else f"serve={options.serve}"
    if options.executor != "serial":
        raise OptionError(
            "executor",
            f"{options.executor} with {given}: the server runs the model, so there are no local "
            "GPUs to shard over; drop the executor setting",
        )
    # torch comes with these: imported only for a run that names a server
    from flowtrace.engine.remote import SIMULATED
    from flowtrace.models import HUB_ID, TOY

    if options.serve == SIMULATED:
        return

    # A server loads checkpoints by Hugging Face id; a local folder or the toy has no such name.
    model = options.model
    if model == TOY or Path(model).expanduser().exists() or not HUB_ID.match(model):
        raise OptionError(
            "remote" if options.remote else "serve",
            f"{'' if options.remote else f'{options.serve}: '}model={model} is not a Hugging "
            "Face id; a server can only run a model it hosts, named by its id (e.g. "
            "model=llava-hf/LLaVA-NeXT-Video-7B-hf). To check a recipe against the remote path "
            "with a local model, use serve=local",
        )
    if options.serve is not None and not options.serve.startswith(("http://", "https://")):
        raise OptionError(
            "serve",
            f"{options.serve}: give the server's URL, e.g. http://gpu-box:5001 (or 'local' to "
            "simulate a server in this process)",
        )


def _check_ray(options: RunOptions, recipes: int) -> None:
    """The ray executor: one recipe, a device Ray can hand out, a positive share of GPUs."""
    if options.executor != "ray":
        return
    if recipes > 1:
        raise OptionError(
            "executor", "ray runs one recipe at a time; run several in one pass serially"
        )
    if options.device not in ("auto", "cpu", "cuda"):
        raise OptionError(
            "device",
            f"{options.device} with executor=ray: Ray gives each worker its own GPU; use "
            "device=auto (or cuda, or cpu)",
        )
    if options.gpus_per_worker <= 0:
        raise OptionError("gpus_per_worker", f"{options.gpus_per_worker}: must be above 0")


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
