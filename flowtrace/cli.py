"""The `flowtrace` command line."""

from __future__ import annotations

import functools
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowtrace.errors import FlowtraceError, OptionError, StoreError

app = typer.Typer(
    help="Map how information flows inside video LLMs (attention knockout, logit lens, …).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets: generate the synthetic video QA set, list tasks.")
toy_app = typer.Typer(help="The embedded toy VideoLLM: train it again from its seed.")
app.add_typer(data_app, name="data")
app.add_typer(toy_app, name="toy")
console = Console(stderr=True)


def _fail(err: Exception, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {_as_flags(err)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _as_flags(err: Exception) -> str:
    """The library names parameters (`frames: -3: …`, `data=x …`); say them as the flags."""
    text = str(err)
    params = _option_flags()
    if isinstance(err, OptionError):  # "window: 0: must be …" -> "--window 0: must be …"
        name, rest = err.option, " " + text[len(err.option) :].removeprefix(": ")
    else:
        match = re.match(r"^([a-z_]+)=", text)
        if not match:
            return text
        name, rest = match[1], " " + text[match.end() :]
    flag = params.get(name) or params.get(name.removesuffix("s"))  # tasks -> --task
    return flag + rest if flag else text


@functools.cache
def _option_flags() -> dict[str, str]:
    """Parameter name -> its flag, over every command (one name means one flag throughout)."""
    flags: dict[str, str] = {}
    groups = [typer.main.get_command(app)]
    while groups:
        group = groups.pop()
        for command in getattr(group, "commands", {}).values():
            groups.append(command)
            for param in command.params:
                if param.param_type_name == "option":
                    flags.setdefault(param.name, max(param.opts, key=len))
    return flags


def _open_store(path: Path):
    from flowtrace.store import open_cube

    try:
        return open_cube(path)
    except FlowtraceError as err:
        _fail(err)


def _parse_sweep(sweep: str | None) -> tuple[int, int] | None:
    if sweep is None:
        return None
    try:
        start, stop = (int(x) for x in sweep.split("-"))
    except ValueError:
        raise FlowtraceError(f"--sweep {sweep}: write START-STOP, e.g. 4-20") from None
    return start, stop


@app.command()
def run(
    ctx: typer.Context,
    recipes: Annotated[
        list[str],
        typer.Argument(
            help="Recipe files or shipped names, e.g. recipes/cross_frame.py; several run in one "
            "pass over the data.",
            show_default=False,
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            help="'toy' (embedded), 'planted' (the toy with planted routes), a local checkpoint "
            "folder or a Hugging Face id."
        ),
    ] = "toy",
    data: Annotated[
        str,
        typer.Option(
            help="'toy' (embedded held-out split), KIND:PATH (tvbench, tvbench-open, mvbench, "
            "tomato, longvideobench, videomme, vcgbench), a TVBench-layout folder, or a name "
            "from ~/.config/flowtrace/data.toml (docs/data.md)."
        ),
    ] = "toy",
    task: Annotated[
        list[str] | None, typer.Option(help="Task name or index; repeat for several. Default all.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many samples, spread over the tasks.")
    ] = None,
    ratio: Annotated[
        float | None,
        typer.Option(
            help="Seeded random subset of each task, as the reference's --test_ratio: a count "
            "per task (≥ 1) or a share (0–1)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Zarr store to write (with several recipes: a folder of RECIPE.zarr stores). "
            "Default results/RECIPE/….zarr"
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[
        Literal["auto", "float32", "bfloat16", "float16"],
        typer.Option(help="auto: bfloat16 on GPU, float32 on CPU."),
    ] = "auto",
    attn: Annotated[
        Literal["sdpa", "eager"], typer.Option(help="Attention implementation.")
    ] = "sdpa",
    window: Annotated[
        int | None,
        typer.Option(
            help="Layers blocked per sweep step. Default: 9, the reference's window, for models "
            "of 16 layers or more; shallower ones (the toy) get 9/32 of their depth, odd. The "
            "store records the rule (window_default).",
        ),
    ] = None,
    window_style: Annotated[
        Literal["center", "inverse", "top_down", "bottom_up"],
        typer.Option(help="Where the blocked window sits around each sweep layer (as the paper)."),
    ] = "center",
    sweep: Annotated[
        str | None, typer.Option(help="Sweep only layers START-STOP (stop excluded).")
    ] = None,
    sample_mode: Annotated[
        Literal["correct", "wrong", "all"],
        typer.Option(help="Analyse the samples the model answers right, wrong, or all."),
    ] = "correct",
    frames: Annotated[
        int | None, typer.Option(min=1, help="Frames per video (adapter default).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Reference engine: knockout conditions per forward.")
    ] = 8,
    heads: Annotated[
        str,
        typer.Option(
            help="Knockout in every attention head (all), only in listed heads (0,5,7), or in "
            "each head alone (sweep: the cube gains a head dim)."
        ),
    ] = "all",
    engine: Annotated[
        Literal["fast", "reference"],
        typer.Option(
            help="Knockout path: fast (recomputes only what a knockout changes; same numbers) "
            "or reference (one full forward per condition)."
        ),
    ] = "fast",
    adapter: Annotated[
        str | None, typer.Option(help="Force an adapter instead of the config's choice.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for anything random.")] = 0,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing --out store (default: resume it).")
    ] = False,
    random_ratio: Annotated[
        float | None,
        typer.Option(
            help="effective_pathway: random baseline cuts this share of edges per layer "
            "(default: the pathway's own budget)."
        ),
    ] = None,
    eval_only: Annotated[
        bool, typer.Option(help="Only the clean pass: accuracy per task, no knockout.")
    ] = False,
    generate: Annotated[
        int | None,
        typer.Option(
            help="Knockout recipes: also generate a greedy reply of up to N tokens, clean and "
            "under every knockout (reference engine; default: the recipe's own, 0 for most)."
        ),
    ] = None,
    pooling: Annotated[
        str | None,
        typer.Option(
            help="PLLaVA video pooling T-H-W (the reference's --pooling_shape; default 8-12-12)."
        ),
    ] = None,
    lora: Annotated[
        str | None,
        typer.Option(help="PEFT LoRA adapter folder, merged into the weights (needs peft)."),
    ] = None,
    executor: Annotated[
        Literal["serial", "ray"],
        typer.Option(
            help="serial (this process) or ray: samples sharded over Ray workers, one model per "
            "GPU (docs/scale.md)."
        ),
    ] = "serial",
    address: Annotated[
        str | None,
        typer.Option(help="Ray: cluster to join ('auto' on a node of it); default: start one."),
    ] = None,
    gpus_per_worker: Annotated[
        float, typer.Option(help="Ray: GPUs per worker (2 for a model that needs two).")
    ] = 1.0,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Ray: at most this many workers (default: every GPU)."),
    ] = None,
    remote: Annotated[
        bool,
        typer.Option(help="Run the traces on NDIF (a model it hosts; key from NDIF_API_KEY)."),
    ] = False,
    serve: Annotated[
        str | None,
        typer.Option(
            help="Run the traces on your nnsight server at this URL; 'local' simulates one "
            "in this process (a check that the recipe's traces serialize)."
        ),
    ] = None,
    prefetch: Annotated[
        int,
        typer.Option(
            min=0,
            help="Samples decoded and processed ahead of the model, in a background thread "
            "(0: in line).",
        ),
    ] = 2,
) -> None:
    """Run recipes on a model and dataset; write a zarr cube and a figure per recipe.

    Several recipes (or a pass file such as recipes/paper.py) run in one pass: each video is
    decoded once, the clean pass runs once, and every recipe's knockouts go through the engine
    together; each recipe gets its own store, the same as running it alone."""
    from flowtrace.recipe import load_recipes
    from flowtrace.runner import RunOptions
    from flowtrace.runner import run as run_recipe

    started_at = time.time()
    loaded_recipes = []
    try:
        # A pass file (recipes/paper.py) stands for the recipes it lists.
        loaded_recipes = [r for recipe in recipes for r in load_recipes(recipe)]
        options = RunOptions(
            model=model,
            adapter=adapter,
            data=data,
            tasks=task or None,
            limit=limit,
            ratio=ratio,
            out=out,
            device=device,
            dtype=dtype,
            attn=attn,
            window=window,
            window_style=window_style,
            sweep=_parse_sweep(sweep),
            sample_mode=sample_mode,
            frames=frames,
            batch_size=batch_size,
            engine=engine,
            heads=heads,
            seed=seed,
            overwrite=overwrite,
            eval_only=eval_only,
            random_ratio=random_ratio,
            generate=generate,
            pooling=pooling,
            lora=lora,
            executor=executor,
            address=address,
            gpus_per_worker=gpus_per_worker,
            workers=workers,
            remote=remote,
            serve=serve,
            prefetch=prefetch,
        )
        started = time.perf_counter()
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
        )
        # The bar starts with the first sample, so set-up errors print as a single line.
        bar = Progress(*columns, console=console)
        job = bar.add_task(", ".join(r.name for r in loaded_recipes), total=None, status="")
        counts: dict[str, int] = {}

        def update(done: int, total: int, status: str) -> None:
            if not bar.live.is_started:
                bar.start()
            counts[status] = counts.get(status, 0) + 1
            text = " ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            bar.update(job, completed=done, total=total, status=text)

        try:
            # One recipe: one RunResult; several: one pass over the data, a result per recipe.
            single = len(loaded_recipes) == 1
            target = loaded_recipes[0] if single else loaded_recipes
            answer = run_recipe(target, options, progress=update)
            results = [answer] if single else list(answer)
        finally:
            bar.stop()
    except FlowtraceError as err:
        _fail(err)
        return
    except KeyboardInterrupt:
        files = {r.name: r.source_file.split("#", 1)[0] for r in loaded_recipes}
        _interrupted(ctx, files, out, started_at)
        return
    seconds = time.perf_counter() - started
    several = len(results) > 1
    for loaded_recipe, result in zip(loaded_recipes, results, strict=True):
        _summary(loaded_recipe.name if several else "", result, sample_mode, eval_only, seconds)


def _summary(name: str, result, sample_mode: str, eval_only: bool, seconds: float) -> None:
    """One recipe's block: counts, accuracy, resumed and failed samples, figures, store."""
    counts = dict(result.counts)
    head = f"{name}: " if name else ""
    console.print(
        f"{head}samples: {counts.get('ok', 0)} analysed, {counts.get('skipped', 0)} skipped "
        f"(--sample-mode {sample_mode}), {counts.get('failed', 0)} failed · clean accuracy "
        f"{result.clean_accuracy:.1f}% · {seconds:.1f}s",
        highlight=False,
        soft_wrap=True,
    )
    if eval_only or len(result.task_accuracy) > 1:
        for task_name, accuracy in result.task_accuracy.items():
            console.print(f"  {task_name}: {accuracy:.1f}%", highlight=False)
    if result.resumed:
        console.print(f"resumed: {result.resumed} samples were already in {result.store}")
    if result.retried:
        console.print(f"retried: {result.retried} samples after their Ray worker died")
    for reason, n in result.reasons.most_common(5):
        console.print(f"  failed ×{n}: {reason}", highlight=False)
    for note, n in result.fallbacks.most_common(3):
        console.print(
            f"[bold yellow]fast engine fell back[/] to the reference path on {n} sample"
            f"{'' if n == 1 else 's'}: {note}",
            highlight=False,
            soft_wrap=True,
        )
    for figure in result.figures:
        console.print(f"figure: {figure}")
    print(f"store: {result.store}")


def _interrupted(ctx: typer.Context, files: dict[str, str], out: Path | None, since: float) -> None:
    """Ctrl-C: say what the stores keep and the command that carries on from there; exit 130.
    `files`: each recipe's name and file (a pass file's members resume one by one)."""
    names = list(files)
    stores = _stores(names, out, since)
    for name, store in stores.items():
        kept = _kept(store)
        console.print(
            f"interrupted: {kept} sample{'' if kept == 1 else 's'} of {name} kept in {store}",
            highlight=False,
            soft_wrap=True,
        )
    if not stores:
        console.print("interrupted before any store was written", highlight=False)
    if out is not None or len(stores) <= 1:
        store = next(iter(stores.values()), None) if out is None else None
        console.print(
            f"resume with: {_command_line(ctx, out=store)}", highlight=False, soft_wrap=True
        )
    else:  # several recipes in default stores: each resumes on its own
        for name, store in stores.items():
            command = _command_line(ctx, out=store, recipes=[files[name]])
            console.print(f"resume {name} with: {command}", highlight=False, soft_wrap=True)
    raise typer.Exit(130)


def _stores(names: list[str], out: Path | None, since: float) -> dict[str, Path]:
    """Where each recipe's samples went: --out (a folder of NAME.zarr with several recipes), or
    the newest default store the run created."""
    if out is not None:
        chosen = {names[0]: out} if len(names) == 1 else {n: out / f"{n}.zarr" for n in names}
        return {n: p for n, p in chosen.items() if p.exists()}
    found = {}
    for name in names:
        fresh = [p for p in Path("results", name).glob("*.zarr") if p.stat().st_mtime >= since - 1]
        if fresh:
            found[name] = max(fresh, key=lambda p: p.stat().st_mtime)
    return found


def _kept(store: Path) -> int:
    from flowtrace.store import open_cube

    try:
        return int(open_cube(store).sizes.get("sample", 0))
    except Exception:  # a store killed before its first sample holds none
        return 0


def _command_line(
    ctx: typer.Context, out: Path | None = None, recipes: list[str] | None = None
) -> str:
    """This command as typed (the options given on the command line), without --overwrite, and
    with `out` when the store was a default one."""
    words = ["flowtrace", ctx.info_name or "run"]
    for param in ctx.command.params:
        name, value = param.name, ctx.params.get(param.name)
        if param.param_type_name == "argument":
            values = recipes if name == "recipes" and recipes else value
            words += [str(v) for v in (values if isinstance(values, list | tuple) else [values])]
            continue
        if name == "out" and out is not None:
            value = out
        elif name == "overwrite" or getattr(ctx.get_parameter_source(name), "name", "") != (
            "COMMANDLINE"
        ):
            continue
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            words.append(flag if value else max(param.secondary_opts, key=len))
        elif isinstance(value, list | tuple):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to write (json/ and video/ inside).")],
    n_per_task: Annotated[int, typer.Option(help="Samples per task.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same data.")] = 0,
    task: Annotated[list[str] | None, typer.Option(help="Only these tasks (repeat).")] = None,
    shuffle: Annotated[
        bool,
        typer.Option(
            help="Candidates in random order (the embedded toy was trained on the fixed order)."
        ),
    ] = False,
) -> None:
    """Generate the synthetic TVBench-style video QA set (real mp4 files)."""
    from flowtrace.data import synth

    try:
        synth.generate(out, n_per_task=n_per_task, seed=seed, tasks=task or None, shuffle=shuffle)
    except (FlowtraceError, ValueError) as err:
        _fail(err)
    print(out)


@data_app.command("ls")
def data_ls(
    data: Annotated[str, typer.Argument(help="'toy', KIND:PATH, a folder or a data.toml name.")],
) -> None:
    """List a dataset's tasks: index (for --task), name and sample count."""
    from flowtrace.data import task_counts
    from flowtrace.runner import resolve_data

    try:
        counts = task_counts(resolve_data(data))
    except (FlowtraceError, ValueError) as err:
        _fail(err)
        return
    for i, (name, count) in enumerate(counts.items()):
        print(f"{i}\t{name}\t{count}")


@toy_app.command("train")
def toy_train(
    out: Annotated[Path, typer.Option(help="Where to write the model and the held-out split.")] = (
        Path("flowtrace/toy/embedded")
    ),
    seed: Annotated[int, typer.Option(help="Seed for data, init and batches.")] = 0,
    steps: Annotated[int, typer.Option(help="Optimizer steps (0: the default).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Fresh clips per step (0: the default, 32).")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda (the same recipe, minutes faster).")] = (
        "cpu"
    ),
    plant: Annotated[
        bool,
        typer.Option(
            help="Train under fixed attention routes (the planted ground-truth model, written "
            "to OUT/planted; see README)."
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes drawing clips ahead of the optimizer (0: none). On a GPU the clips "
            "bound the speed; the batches are the same."
        ),
    ] = 0,
    last_frame_loss: Annotated[
        float,
        typer.Option(
            help="With --plant: weight of a second loss on the answer read off the last frame "
            "after the last layer where frames may interact (speeds up learning the routes)."
        ),
    ] = 0.0,
    control_cut: Annotated[
        float,
        typer.Option(
            help="With --plant: share of the single-frame control clips (Object Color) trained "
            "with cross-frame attention cut wherever the plant leaves it open."
        ),
    ] = 0.0,
    lr: Annotated[float, typer.Option(help="Peak learning rate (0: the default, 1e-3).")] = 0.0,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from this trained toy checkpoint (weights, tokenizer, processor) "
            "instead of random weights, e.g. flowtrace/toy/embedded/model with --plant."
        ),
    ] = None,
) -> None:
    """Train the embedded toy VideoLLM (see README for time and accuracy)."""
    from flowtrace.toy.train import TrainConfig, train

    if init is not None and not (init / "config.json").is_file():
        _fail(FlowtraceError(f"--init {init}: no config.json there; give a toy checkpoint folder"))
    config = TrainConfig(
        seed=seed,
        device=device,
        plant=plant,
        workers=workers,
        init=str(init) if init else None,
        last_frame_loss=last_frame_loss,
        control_cut=control_cut,
    )
    if lr:
        config.lr = lr
    if steps:
        config.steps = steps
    if batch_size:
        config.batch_size = batch_size
    try:
        train(out, config, log=lambda line: console.print(line, highlight=False))
    except FlowtraceError as err:
        _fail(err)


@toy_app.command("results")
def toy_results(
    out: Annotated[Path, typer.Option(help="Folder to write (the committed one: results).")] = (
        Path("results")
    ),
    model: Annotated[
        list[str] | None, typer.Option(help="toy and/or planted (repeat); default both.")
    ] = None,
    recipe: Annotated[
        list[str] | None, typer.Option(help="Shipped recipe names (repeat); default all.")
    ] = None,
) -> None:
    """Regenerate the reference results: every shipped recipe on the embedded models."""
    from flowtrace.toy.results import MODELS, SAMPLES, regenerate

    unknown = sorted(set(model or ()) - set(MODELS)) + sorted(set(recipe or ()) - set(SAMPLES))
    if unknown:
        _fail(
            FlowtraceError(
                f"unknown {', '.join(unknown)}: models are {', '.join(MODELS)}, recipes "
                f"{', '.join(SAMPLES)}"
            )
        )
    try:
        regenerate(
            out,
            tuple(model or MODELS),
            tuple(recipe or SAMPLES),
            log=lambda line: console.print(line, highlight=False),
        )
    except FlowtraceError as err:
        _fail(err)


@app.command()
def show(
    store: Annotated[Path, typer.Argument(help="A store written by `flowtrace run`.")],
) -> None:
    """What a store holds: provenance, samples done/failed, dims, and the summary table."""
    from flowtrace.summary import describe

    print("\n".join(describe(_open_store(store))))


@app.command()
def check(
    store: Annotated[Path, typer.Argument(help="A store written by `flowtrace run`.")],
) -> None:
    """Verify every chunk of a store against its checksum (exit 1: damaged, 2: unreadable)."""
    from flowtrace.store import check_store, chunk_count, open_cube

    try:
        problems = check_store(store)
        ds = open_cube(store) if not problems else None
    except StoreError as err:
        _fail(err)
        return
    except FlowtraceError as err:
        _fail(err, 1)
        return
    if problems:
        for problem in problems:
            console.print(f"damaged: {problem}", highlight=False, soft_wrap=True)
        many = "s" if len(problems) > 1 else ""
        console.print(f"{len(problems)} problem{many} in {store}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    print(f"ok: {ds.sizes.get('sample', 0)} samples, {chunk_count(store)} chunks verified")


@app.command()
def plot(
    stores: Annotated[
        list[Path], typer.Argument(help="A store, or several knockout stores to compare.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Figure path without suffix (default: next to the store).")
    ] = None,
) -> None:
    """Redraw a store's figure (HTML + PNG) from the store alone, no model needed; with several
    knockout stores, their layer curves side by side."""
    from flowtrace.plots import chart_for, compare_chart, save_chart

    if len(stores) == 1:
        chart = chart_for(_open_store(stores[0]))
    else:
        try:
            chart = compare_chart({p.stem: _open_store(p) for p in stores})
        except ValueError as err:
            _fail(FlowtraceError(str(err)))
            return
    for path in save_chart(chart, out or stores[0].with_suffix("")):
        print(path)


@app.command()
def pathways(
    flow_map: Annotated[Path, typer.Argument(help="A store of recipes/flow_map.py.")],
    thresholds: Annotated[
        str, typer.Option(help="Shares of each pathway's peak effect that keep a layer.")
    ] = "0.1,0.25,0.5,0.75",
    out: Annotated[Path, typer.Option(help="Folder for the runs and the curve.")] = Path(
        "results/auto_pathway"
    ),
    model: Annotated[str | None, typer.Option(help="Default: the flow map's model.")] = None,
    data: Annotated[str | None, typer.Option(help="Default: the flow map's data.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many samples.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    noise_floor: Annotated[
        float | None,
        typer.Option(
            help="Smallest % change of p(answer) that counts (default 1e-3; raise it for bf16 "
            "stores, lower it for faint float32 effects)."
        ),
    ] = None,
    find: Annotated[
        bool,
        typer.Option(
            "--find",
            help="Search every (layer, source, target) cell for the fewest edges to keep instead "
            "(fit on half the samples, frontier on the other half); writes recipe.py to --out.",
        ),
    ] = False,
    min_ratio: Annotated[
        float, typer.Option(help="--find: share of each fit sample's p(true answer) to keep.")
    ] = 0.5,
) -> None:
    """Derive effective pathways from a flow map at each threshold, run them against random
    cuts of the same budget, and draw accuracy against the share of edges kept; with --find,
    search for the pathway instead (docs/pathways.md)."""
    from flowtrace.pathways import curve_chart, pathway_curve
    from flowtrace.plots import save_chart
    from flowtrace.runner import RunOptions

    ds = _open_store(flow_map)
    if find:
        from flowtrace.data import read_samples
        from flowtrace.discovery import discover
        from flowtrace.models import load_model
        from flowtrace.pipeline.options import resolve_data

        try:
            loaded = load_model(model or str(ds.attrs["model"]), device=device)
            samples = read_samples(resolve_data(data or str(ds.attrs["data"])))[:limit]
            discover(loaded, samples, out, min_ratio=min_ratio)
        except FlowtraceError as err:
            _fail(err)
        return
    try:
        levels = [float(t) for t in thresholds.split(",")]
    except ValueError:
        _fail(FlowtraceError(f"--thresholds {thresholds}: give numbers such as 0.1,0.5"))
        return
    try:
        options = RunOptions(
            model=model or str(ds.attrs["model"]),
            data=data or str(ds.attrs["data"]),
            limit=limit,
            device=device,
            out=out,
        )
        table = pathway_curve(flow_map, levels, options, floor=noise_floor)
    except FlowtraceError as err:
        _fail(err)
        return
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "curve.csv", index=False)
    print(table.to_string(index=False))
    for path in [out / "curve.csv", *save_chart(curve_chart(table), out / "curve")]:
        print(path)


@app.command()
def report(
    stores: Annotated[
        list[Path],
        typer.Argument(help="Stores written by `flowtrace run`, or folders holding them."),
    ],
    out: Annotated[Path, typer.Option(help="The HTML page to write.")] = Path("report.html"),
    title: Annotated[str, typer.Option(help="The page's title.")] = "flowtrace report",
    site: Annotated[
        Path | None,
        typer.Option(
            help="Write a folder site instead (gallery, a page per store, side-by-side pages, "
            "data split and downsampled): for a full benchmark."
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=1, help="Samples per store in its sample browser (default 64; 200 with --site)."
        ),
    ] = None,
) -> None:
    """A viewer of stores that works offline: per store its provenance, figure and sample
    browser, two stores side by side; one HTML page (at most 5 MB) or a --site folder."""
    from flowtrace.report import (
        SINGLE_SAMPLES,
        SITE_SAMPLES,
        collect_stores,
        write_report,
        write_site,
    )

    try:
        collect_stores(stores)  # a bad path fails here with one line, before any work
        if site is not None:
            print(write_site(stores, site, title, samples=samples or SITE_SAMPLES))
        else:
            print(write_report(stores, out, title, samples=samples or SINGLE_SAMPLES))
    except FlowtraceError as err:
        _fail(err)


@app.command("query")
def query_command(
    stores: Annotated[
        list[Path], typer.Argument(help="One or more stores (a `run` column joins them).")
    ],
    sel: Annotated[
        str | None, typer.Option(help="DIM=VALUE[|VALUE…],…  e.g. source=video,target=last")
    ] = None,
    mean: Annotated[list[str] | None, typer.Option(help="Average over this dim (repeat).")] = None,
    var: Annotated[list[str] | None, typer.Option(help="Only these variables (repeat).")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV (the default).")] = False,
    json_: Annotated[bool, typer.Option("--json", help="JSON records.")] = False,
    parquet: Annotated[bool, typer.Option("--parquet", help="Parquet (needs --out).")] = False,
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    all_samples: Annotated[
        bool, typer.Option(help="Keep skipped and failed samples too (NaN where not measured).")
    ] = False,
) -> None:
    """Select, average and export a cube (or several, side by side) as a table."""
    from flowtrace.query import parse_selection, query, write_table

    chosen = [name for name, on in (("csv", csv), ("json", json_), ("parquet", parquet)) if on]
    if len(chosen) > 1:
        _fail(FlowtraceError(f"--{' --'.join(chosen)}: choose one output format"))
    fmt = chosen[0] if chosen else "csv"
    try:
        table = query(stores, parse_selection(sel), mean or [], var, not all_samples)
        text = write_table(table, fmt, out)
    except FlowtraceError as err:
        _fail(err)
        return
    if text is not None:
        sys.stdout.write(text)


@app.command("models")
def models() -> None:
    """List the adapters: what each reads, what it needs, its frames and prompt template."""
    from flowtrace.models import ADAPTERS

    for name, cls in ADAPTERS.items():
        print(f"{name}: {cls.summary}")
        print(
            f"    model_type: {', '.join(cls.model_types)}; frames: {cls.default_frames}; "
            f"template: {cls.template.name}"
        )
        if cls.needs:
            print(f"    needs: {cls.needs}")
    print(
        "The adapter is picked from the checkpoint's config.json; --adapter NAME forces one. "
        "docs/models.md has the details."
    )


def main() -> None:  # pragma: no cover - console entry for `python -m flowtrace`
    sys.exit(app())
