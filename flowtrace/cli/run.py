"""`flowtrace run`: recipes on a model and dataset, a progress bar, and each store's summary."""

from __future__ import annotations

import dataclasses
import inspect
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from flowtrace.cli.common import console, fail, output_warnings
from flowtrace.cli.resume import interrupted, later_ctrl_c_waits
from flowtrace.cli.settings import declared_flag, parameters, run_options
from flowtrace.errors import FlowtraceError

if TYPE_CHECKING:
    from flowtrace.runner import RunResult


def run(ctx: typer.Context, recipes: list[str], **given: Any) -> None:
    """Run recipes on a model and dataset; write a zarr cube and a figure per recipe.

    Several recipes (or a pass file such as recipes/paper.py) run in one pass: each video is
    decoded once, the clean pass runs once, and every recipe's knockouts go through the engine
    together; each recipe gets its own store, the same as running it alone."""
    from flowtrace.plots.run_figures import draw_run_figures
    from flowtrace.recipe import load_recipes
    from flowtrace.runner import plan_outputs
    from flowtrace.runner import run as run_recipe

    loaded_recipes, outputs = [], None
    # The first Ctrl-C stops the run; later ones cannot cut short the save or the resume
    # command (exit 130 either way).
    with later_ctrl_c_waits():
        try:
            # A pass file (recipes/paper.py) stands for the recipes it lists.
            loaded_recipes = [r for recipe in recipes for r in load_recipes(recipe)]
            options = run_options(given)
            # Every store is settled before the run starts, so a Ctrl-C names them.
            outputs = plan_outputs(loaded_recipes, options)
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

            # The run's own warnings (a dry run's skipped samples) as lines after the bar.
            with output_warnings():
                try:
                    # One recipe: one RunResult; several: one pass, a result per recipe.
                    single = len(loaded_recipes) == 1
                    target = loaded_recipes[0] if single else loaded_recipes
                    # The figures are drawn here, from the stores, once the run is done.
                    stores_only = dataclasses.replace(options, plot=False)
                    answer = run_recipe(target, stores_only, progress=update, outputs=outputs)
                    results = [answer] if single else list(answer)
                finally:
                    bar.stop()
            figures = draw_run_figures([r.store for r in results])
        except FlowtraceError as err:
            fail(err)
        except KeyboardInterrupt:
            files = {r.name: r.source_file.split("#", 1)[0] for r in loaded_recipes}
            interrupted(ctx, files, outputs)
    seconds = time.perf_counter() - started
    several = len(results) > 1
    for loaded_recipe, result in zip(loaded_recipes, results, strict=True):
        drawn = figures.stores.get(result.store, [])
        name = loaded_recipe.name if several else ""
        summary(name, result, options.sample_mode, options.eval_only, seconds, drawn)
    for figure in figures.combined:
        console.print(f"combined figure: {figure}")


RECIPES = typer.Argument(
    help="Recipe files or shipped names, e.g. recipes/cross_frame.py; several run in one pass "
    "over the data.",
    show_default=False,
)
# The options are the run's declared settings (pipeline.options.RunOptions): one per setting.
run.__signature__ = inspect.Signature(
    [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "recipes",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[list[str], RECIPES],
        ),
        *parameters(),
    ]
)


def summary(
    name: str,
    result: RunResult,
    sample_mode: str,
    eval_only: bool,
    seconds: float,
    figures: list[Path] | None = None,
) -> None:
    """One recipe's block: counts, accuracy, resumed and failed samples, figures (default: the
    result's), store."""
    counts = dict(result.counts)
    head = f"{name}: " if name else ""
    console.print(
        f"{head}samples: {counts.get('ok', 0)} analysed, {counts.get('skipped', 0)} skipped "
        f"({declared_flag('sample_mode')} {sample_mode}), {counts.get('failed', 0)} "
        f"failed · clean accuracy "
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
    for figure in result.figures if figures is None else figures:
        console.print(f"figure: {figure}")
    print(f"store: {result.store}")
