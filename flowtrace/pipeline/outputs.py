"""Where a run writes, settled once before anything is read or loaded: each recipe's store.

`settle_outputs` is the one place a store's path is decided. The runner takes the stores' locks
with it before the model loads, the pass (or the Ray driver) writes them, and the CLI names them
when a run is interrupted (its resume command). Figures are named after their stores
(plots.figure_stem).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flowtrace.errors import OptionError
from flowtrace.paths import STORE_SUFFIX
from flowtrace.pipeline.options import RunOptions

DEFAULT_FOLDER = Path("results")  # default stores: results/RECIPE/MODEL__DATA__STAMP.zarr


@dataclass(frozen=True)
class Outputs:
    """A run's stores, by recipe name in the pass's order."""

    stores: dict[str, Path]
    given: bool  # out was given; else default stores, new ones named after a timestamp


def settle_outputs(
    names: Sequence[str], options: RunOptions, model_id: str | None = None
) -> Outputs:
    """Each recipe's store: `out` for one recipe, OUT/NAME.zarr for several, else
    results/NAME/MODEL__DATA__STAMP.zarr (one stamp for the pass). `model_id`: the loaded
    model's id where a model was given loaded (default: the model setting)."""
    if len(set(names)) < len(names):
        raise OptionError("recipes", f"{', '.join(names)}: each recipe may appear once in a pass")
    if options.out is not None:
        out = Path(options.out)
        if len(names) == 1:
            return Outputs({names[0]: out}, given=True)
        return Outputs({name: out / f"{name}{STORE_SUFFIX}" for name in names}, given=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = Path(model_id or options.model).name or "model"
    data = Path(options.data.split(":", 1)[-1]).name or "data"
    return Outputs(
        {name: DEFAULT_FOLDER / name / f"{model}__{data}__{stamp}{STORE_SUFFIX}" for name in names},
        given=False,
    )
