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
from flowtrace.errors import DataError, FlowtraceError, OptionError
from flowtrace.models import LoadedModel
from flowtrace.outputs import OutputWarning
from flowtrace.paths import store_stem
from flowtrace.pipeline.analysis import prepare_analyses
from flowtrace.pipeline.options import RunOptions, check_options, default_out, resolve_data
from flowtrace.pipeline.passes import run_pass
from flowtrace.plots import FigureTooLarge, chart_for, save_store_figure
from flowtrace.plots.stores import is_sweep, pass_figure
from flowtrace.recipe import Recipe
from flowtrace.store import open_cube, reserved

__all__ = ["RunOptions", "RunResult", "resolve_data", "run"]


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
) -> RunResult | list[RunResult]:
    """Run a recipe, or several in one pass (each video decoded once, one clean pass, every
    recipe's knockouts batched together; one store each, the same as running it alone).

    `loaded` (a model already in memory) serves the serial executor; Ray workers load their own.
    """
    recipes = list(recipe) if isinstance(recipe, list | tuple) else [recipe]
    if not recipes:
        raise OptionError("recipes", "give at least one recipe")
    check_options(options, len(recipes))
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
    with reserved(planned_stores(recipes, options)):
        if options.executor == "ray":
            from flowtrace.scale.ray_executor import run_on_ray

            out, resumed, retried = run_on_ray(recipes[0], options, source.root, samples, progress)
            outs = [out]
        else:
            analyses = prepare_analyses(recipes, options, source.root, samples, loaded)
            outs, resumed = run_pass(analyses, samples, progress)
    results, sweeps = [], {}
    for out in outs:
        # A figure reads every array, so damage shows here; the summary alone reads five.
        ds = open_cube(out, load=None if options.plot else False)
        result = summarise(ds, out, resumed)
        result.retried = retried
        if options.plot and result.counts["ok"]:
            result.figures = figure(ds, out)
            if is_sweep(ds):
                sweeps[out] = ds
        results.append(result)
    if len(sweeps) > 1:
        combined = pass_figure_of(sweeps)
        for result in results:
            result.pass_figures = combined
    return results if isinstance(recipe, list | tuple) else results[0]


def figure(ds: xr.Dataset, out: Path) -> list[Path]:
    """The store's figure beside it (plots.save_store_figure); one too large to draw is skipped
    with a warning, the store being whole."""
    try:
        return save_store_figure(chart_for(ds), out)
    except FigureTooLarge as err:
        warnings.warn(f"no figure for {out}: {err}", OutputWarning, stacklevel=2)
        return []


def pass_figure_of(sweeps: dict[Path, xr.Dataset]) -> list[Path]:
    """A pass's knockout sweeps in one figure, a panel per recipe, beside their stores
    (plots.pass_figure); one that cannot be drawn or written is skipped with a warning, the
    stores and their own figures being whole."""
    cubes = {str(ds.attrs.get("recipe") or store_stem(out)): ds for out, ds in sweeps.items()}
    try:
        return pass_figure(cubes, list(sweeps))
    except FlowtraceError as err:  # too large, or its name taken by a file of another's
        warnings.warn(f"no combined figure of the pass: {err}", OutputWarning, stacklevel=2)
        return []


def planned_stores(recipes: list[Recipe], options: RunOptions) -> list[Path]:
    """The stores a run will write that are known before its model loads: `out`, or one store
    per recipe in it (a default store is named after the model and a timestamp: a new one)."""
    if options.out is None:
        return []
    if len(recipes) == 1:
        return [Path(options.out)]
    return [default_out(r.name, "", options.data, Path(options.out)) for r in recipes]


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
