"""The figures of a run, drawn after it from its stores alone: each store's own figure beside it,
and a pass's knockout sweeps in one combined figure. `flowtrace run` draws them once its stores
are written; `runner.run(..., RunOptions(plot=True))` asks this step too. A figure that cannot be
drawn is a warning: the stores are whole without it."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr

from flowtrace.errors import FlowtraceError
from flowtrace.outputs import OutputWarning
from flowtrace.paths import store_stem
from flowtrace.plots import FigureTooLarge, chart_for, save_store_figure
from flowtrace.plots.stores import is_sweep, pass_figure
from flowtrace.store import analysed_mask, keys, open_cube


@dataclass
class RunFigures:
    """What `draw_run_figures` wrote."""

    stores: dict[Path, list[Path]] = field(default_factory=dict)  # each store's figure files
    combined: list[Path] = field(default_factory=list)  # the pass's sweeps in one figure


def draw_run_figures(stores: Sequence[Path]) -> RunFigures:
    """Each store's figure (a store without an analysed sample has none), and the combined
    figure where two or more of the stores are knockout sweeps."""
    drawn, sweeps = RunFigures(), {}
    try:
        import vl_convert  # noqa: F401 - renders every figure (HTML and PNG)
    except ImportError as err:
        warnings.warn(
            f"no figures: vl-convert-python cannot be imported ({err}); pip install "
            "vl-convert-python, then `flowtrace plot STORE` draws them from the stores, which "
            "are whole",
            OutputWarning,
            stacklevel=2,
        )
        return drawn
    for store in stores:
        ds = open_cube(store)  # a figure reads every array, so damage shows here
        if not bool(analysed_mask(ds).any()):
            continue
        drawn.stores[Path(store)] = store_figure(ds, Path(store))
        if is_sweep(ds):
            sweeps[Path(store)] = ds
    if len(sweeps) > 1:
        drawn.combined = combined_figure(sweeps)
    return drawn


def store_figure(ds: xr.Dataset, store: Path) -> list[Path]:
    """The store's figure beside it (plots.save_store_figure); one too large to draw is skipped
    with a warning."""
    try:
        return save_store_figure(chart_for(ds), store)
    except FigureTooLarge as err:
        warnings.warn(f"no figure for {store}: {err}", OutputWarning, stacklevel=2)
        return []


def combined_figure(sweeps: dict[Path, xr.Dataset]) -> list[Path]:
    """A pass's knockout sweeps in one figure, a panel per recipe, beside their stores
    (plots.pass_figure); one that cannot be drawn or written is skipped with a warning."""
    cubes = {str(ds.attrs.get(keys.RECIPE) or store_stem(out)): ds for out, ds in sweeps.items()}
    try:
        return pass_figure(cubes, list(sweeps))
    except FlowtraceError as err:  # too large, or its name taken by a file of another's
        warnings.warn(f"no combined figure of the pass: {err}", OutputWarning, stacklevel=2)
        return []
