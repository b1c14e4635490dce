"""`flowtrace run`: recipes on a model and dataset, a progress bar, and each store's summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from flowtrace.cli.common import Device, console, fail
from flowtrace.cli.resume import interrupted, later_ctrl_c_waits
from flowtrace.errors import FlowtraceError
from flowtrace.sweep import Sweep, WindowStyle


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
    device: Device = "auto",
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
        WindowStyle,
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
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="Fast engine: run the recomputed layers through torch.compile (default: on "
            "CUDA, off on CPU; the first sample pays about a minute of compiling).",
        ),
    ] = None,
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
        int | None,
        typer.Option(
            min=0,
            help="Samples decoded and processed ahead of the model, in a background thread "
            "(0: in line). Default: 2 on a GPU or server, 0 on CPU (where the model uses "
            "every core).",
            show_default=False,
        ),
    ] = None,
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
    # The first Ctrl-C stops the run; later ones cannot cut short the save or the resume
    # command (exit 130 either way).
    with later_ctrl_c_waits():
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
                sweep=Sweep(window=window, style=window_style, layers=sweep, heads=heads),
                sample_mode=sample_mode,
                frames=frames,
                batch_size=batch_size,
                engine=engine,
                compile=compile,
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
                # Recipe names are the user's text: shown as typed, never read as markup.
                TextColumn("{task.description}", markup=False, style="bold"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}", markup=False),
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
            fail(err)
        except KeyboardInterrupt:
            files = {r.name: r.source_file.split("#", 1)[0] for r in loaded_recipes}
            interrupted(ctx, files, out, started_at)
    seconds = time.perf_counter() - started
    several = len(results) > 1
    for loaded_recipe, result in zip(loaded_recipes, results, strict=True):
        summary(loaded_recipe.name if several else "", result, sample_mode, eval_only, seconds)
    for figure in results[0].pass_figures if results else []:
        console.print(f"combined figure: {figure}")


def summary(name: str, result, sample_mode: str, eval_only: bool, seconds: float) -> None:
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
            Text.assemble(
                ("fast engine fell back", "bold yellow"),
                f" to the reference path on {n} sample{'' if n == 1 else 's'}: {note}",
            ),
            highlight=False,
            soft_wrap=True,
        )
    for figure in result.figures:
        console.print(f"figure: {figure}")
    print(f"store: {result.store}")
