"""Run recipes over a dataset: the stages live in `flowtrace.pipeline`; this strings them together
and summarises the stores. Recipes say what to measure; the pipeline owns data, device, batching,
progress and storage."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from flowtrace.data import read_samples
from flowtrace.engine.remote import remote_trace_kwargs
from flowtrace.errors import DataError, OptionError
from flowtrace.models import LoadedModel
from flowtrace.outputs import OutputWarning
from flowtrace.pipeline.analysis import prepare_analyses
from flowtrace.pipeline.options import RunOptions, check_options, resolve_data
from flowtrace.pipeline.outputs import Outputs, settle_outputs
from flowtrace.pipeline.passes import run_pass
from flowtrace.recipe import Recipe
from flowtrace.store import open_cube, reserved

__all__ = ["Outputs", "RunOptions", "RunResult", "plan_outputs", "resolve_data", "run"]


@dataclass
class RunResult:
    store: Path
    figures: list[Path]
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    fallbacks: Counter = field(default_factory=Counter)  # why the fast engine fell back
    clean_accuracy: float = float("nan")
    task_accuracy: dict[str, float] = field(default_factory=dict)
    resumed: int = 0  # samples found already done in an existing store
    retried: int = 0  # samples sent again after the Ray worker running them died
    # A pass's combined figure of its knockout sweeps (plots.pass_figure), the same in each of
    # the pass's results.
    pass_figures: list[Path] = field(default_factory=list)


def run(
    recipe: Recipe | list[Recipe],
    options: RunOptions,
    progress: Callable[[int, int, str], None] | None = None,
    loaded: LoadedModel | None = None,
    outputs: Outputs | None = None,
) -> RunResult | list[RunResult]:
    """Run a recipe, or several in one pass (each video decoded once, one clean pass, every
    recipe's knockouts batched together; one store each, the same as running it alone).

    `loaded` (a model already in memory) serves the serial executor; Ray workers load their own.
    `outputs`: the stores, settled by the caller beforehand (`plan_outputs`) to know them before
    the run ends; default: settled here. With `options.plot` the figures step draws each store's
    figure after the run (plots.run_figures).
    """
    recipes = list(recipe) if isinstance(recipe, list | tuple) else [recipe]
    if not recipes:
        raise OptionError("recipes", "give at least one recipe")
    check_options(options, len(recipes))
    outputs = outputs or plan_outputs(recipes, options, loaded)
    source = resolve_data(options.data)
    try:
        samples = read_samples(
            source, tasks=options.tasks, limit=options.limit, ratio=options.ratio
        )
    except ValueError as err:
        raise DataError(str(err)) from None
    if not samples:
        raise DataError(f"data={options.data}: no samples found")
    remote_trace_kwargs(options)  # refuse remote=True without an NDIF key before loading anything
    retried = 0
    # The stores' locks are taken before the model loads: a store another run writes, or an out
    # that cannot be a store, is refused at once. Each store adopts its lock when it opens.
    with reserved(outputs.stores.values()):
        if options.executor == "ray":
            from flowtrace.scale.ray_executor import run_on_ray

            (store,) = outputs.stores.values()
            out, resumed, retried = run_on_ray(
                recipes[0], options, source.root, samples, store, progress
            )
            outs = [out]
        else:
            analyses = prepare_analyses(
                recipes, options, source.root, samples, loaded, outputs.stores
            )
            outs, resumed = run_pass(analyses, samples, progress)
    results = []
    for out in outs:
        result = summarise(open_cube(out, load=False), out, resumed)
        result.retried = retried
        results.append(result)
    warn_dry_run_skips(options, results)
    if options.plot:
        draw_figures(results)
    return results if isinstance(recipe, list | tuple) else results[0]


class DryRunWarning(OutputWarning):
    """A random-weights run skipped samples by its sample mode, so it ran less analysis than
    the real run will (the CLI prints it as one `warning:` line)."""


def warn_dry_run_skips(options: RunOptions, results: list[RunResult]) -> None:
    """A dry run is for memory and time, but noise answers are mostly wrong, and a sample the
    sample mode skips runs no analysis: say how many, and how to run them all."""
    # A pass's recipes share the clean answers, so they skip the same samples: count one's.
    skipped = max(r.counts.get("skipped", 0) for r in results)
    if options.random_weights and skipped:
        total = max(sum(r.counts.values()) for r in results)
        warnings.warn(
            DryRunWarning(
                f"random weights answer by chance: {skipped} of {total} samples were skipped "
                f"by sample_mode={options.sample_mode} and ran no analysis; for a dry run of "
                "memory and time, pass sample_mode=all"
            ),
            stacklevel=3,
        )


def plan_outputs(
    recipes: Recipe | list[Recipe], options: RunOptions, loaded: LoadedModel | None = None
) -> Outputs:
    """Where a run of `recipes` will write (pipeline.outputs.settle_outputs), before it runs."""
    names = [r.name for r in (recipes if isinstance(recipes, list | tuple) else [recipes])]
    return settle_outputs(names, options, loaded.model_id if loaded is not None else None)


def draw_figures(results: list[RunResult]) -> None:
    """The figures step (plots.run_figures) over a run's stores, kept in its results."""
    from flowtrace.plots.run_figures import draw_run_figures

    drawn = draw_run_figures([r.store for r in results])
    for result in results:
        result.figures = drawn.stores.get(result.store, [])
        result.pass_figures = drawn.combined


def summarise(ds: xr.Dataset, out: Path, resumed: int) -> RunResult:
    """Counts and accuracies from the store itself, resumed samples included."""
    status = [str(x) for x in ds["status"].values]
    result = RunResult(store=out, figures=[], resumed=resumed)
    result.counts.update(status)
    result.reasons.update(
        str(r) for r, s in zip(ds["reason"].values, status, strict=True) if s == "failed"
    )
    if "engine_note" in ds.coords:
        result.fallbacks.update(str(n) for n in ds["engine_note"].values if str(n))
    answered = np.asarray(status) != "failed"
    if answered.any():
        correct = ds["clean_correct"].values[answered]
        tasks = np.asarray([str(t) for t in ds["task"].values])[answered]
        result.clean_accuracy = 100 * float(correct.mean())
        result.task_accuracy = {
            t: 100 * float(correct[tasks == t].mean()) for t in dict.fromkeys(tasks)
        }
    return result
