"""The vocabulary trace programs write interventions in: cut, patch, ablate, steer.

Each intervention names token groups, a site and layers, never positions or modules; a `Trace`
turns a list of them into engine conditions for its sample (`Trace.run`), so the engine batches
them, recomputes only what each changes, and checks the shortcut against full forwards, as it
does for the built-in knockouts. A tuple of interventions is one condition: they apply together.

| intervention | changes | at |
|---|---|---|
| `Cut(edges, layers, heads)` | attention edges `source -> target` forbidden | layers, heads |
| `Patch(site, group, layers, source)` | the group's site output := another run's | layers |
| `Ablate(site, group, layers, how)` | := 0, a mean over other videos, one other video's | layers |
| `Steer(site, group, layers, add, scale)` | := scale · output + add | layers |

Sites: `residual` (a decoder layer's output, what the next layer reads), `attention` (its
attention module's output), `mlp` (its MLP's output), both before the residual add.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import torch
import xarray as xr

from flowtrace.engine.condition import SITES, Edit, KnockoutCondition
from flowtrace.engine.reads import Run

__all__ = [
    "SITES",
    "Ablate",
    "Cut",
    "Grid",
    "Intervention",
    "Outcome",
    "Patch",
    "Run",
    "Steer",
]

Layers = int | Sequence[int] | range
ABLATIONS = ("zero", "mean", "resample")


def _layers(layers: Layers) -> tuple[int, ...]:
    return (layers,) if isinstance(layers, int) else tuple(int(x) for x in layers)


def _check_site(site: str, what: str) -> None:
    if site not in SITES:
        raise ValueError(f"{what}: site {site!r} is not one of {', '.join(SITES)}")


@dataclass(frozen=True)
class Cut:
    """Forbid `edges` ("video -> last", or several) in `layers`, in every head or in `heads`."""

    edges: str | Sequence[str]
    layers: Layers
    heads: Sequence[int] | None = None


@dataclass(frozen=True)
class Patch:
    """The group's `site` output at each of `layers` taken from `source` (a `Run`: the same
    prompt over other frames, `t.capture(frames)`, or a mean of runs, `Run.mean`)."""

    site: str
    group: str
    layers: Layers
    source: Run

    def __post_init__(self) -> None:
        _check_site(self.site, "Patch")


@dataclass(frozen=True)
class Ablate:
    """The group's `site` output at each of `layers` replaced: `zero`; `mean`, its mean over
    the same prompt with other videos of the data (`Trace.donors`); `resample`, one other
    video's (the first donor)."""

    site: str
    group: str
    layers: Layers
    how: str = "zero"

    def __post_init__(self) -> None:
        _check_site(self.site, "Ablate")
        if self.how not in ABLATIONS:
            raise ValueError(f"Ablate: how={self.how!r} is not one of {', '.join(ABLATIONS)}")


@dataclass(frozen=True)
class Steer:
    """The group's `site` output at each of `layers` becomes `scale * output + add` (`add`: a
    (d,) vector, or (tokens, d))."""

    site: str
    group: str
    layers: Layers
    add: torch.Tensor | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_site(self.site, "Steer")
        if self.add is None and self.scale == 1.0:
            raise ValueError("Steer: give add= (a vector) or scale= (a factor other than 1)")


Intervention = Cut | Patch | Ablate | Steer
Condition = Intervention | tuple[Intervention, ...]  # a tuple applies together


@dataclass(frozen=True)
class Grid:
    """Conditions laid out over named dims: `t.run` labels its results with them. A cell whose
    condition is None is not run (a sparse grid): its reads are missing (NaN, -1, False)."""

    conditions: list[Condition | None]
    dims: tuple[str, ...]
    coords: dict[str, list[Any]]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.coords[d]) for d in self.dims)

    @property
    def present(self) -> list[Condition]:
        """The conditions that run, in grid order (the engine's rows)."""
        return [c for c in self.conditions if c is not None]


def grid(make: Callable[..., Condition | None], **dims: Iterable[Any]) -> Grid:
    """`make(**labels)` at every combination of the dims' labels, last dim fastest:
    `grid(lambda layer, group: Ablate("mlp", group, layer), layer=range(32), group=frames)`.
    `make` may return None for a cell nothing should run in (an edge a sample lacks)."""
    coords = {name: list(labels) for name, labels in dims.items()}
    conditions = [
        make(**dict(zip(coords, combo, strict=True))) for combo in product(*coords.values())
    ]
    return Grid(conditions, tuple(coords), coords)


class Outcome:
    """Next-token probabilities under each condition that ran, with the grid's labels:
    `p(token)`, `top(…)` give labelled arrays (xarray, over the grid's dims) a program may
    return as they are; cells of a sparse grid that did not run read NaN, -1 or False."""

    def __init__(
        self,
        probs: torch.Tensor,
        dims: tuple[str, ...],
        coords: dict[str, list],
        present: Sequence[bool] | None = None,
    ):
        """`probs`: (rows, V), one row per condition that ran; `present`: which grid cells
        those rows are (None: every cell)."""
        self.probs, self.dims, self.coords = probs, dims, coords
        self.present = None if present is None or all(present) else np.asarray(present, bool)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.coords[d]) for d in self.dims)

    def label(self, rows: np.ndarray | torch.Tensor, fill: Any = np.nan) -> xr.DataArray:
        """Values per row that ran (rows, …) laid out over the grid, `fill` where nothing ran."""
        if isinstance(rows, torch.Tensor):
            rows = rows.cpu().numpy()
        rows = np.asarray(rows)
        if self.present is not None:
            full = np.full((self.present.size, *rows.shape[1:]), fill, dtype=rows.dtype)
            full[self.present] = rows
            rows = full
        coords = {d: v for d, v in self.coords.items() if not _numbered(v)}
        shape = self.shape + rows.shape[1:]
        return xr.DataArray(rows.reshape(shape), dims=self.dims, coords=coords)

    def p(self, token: int) -> xr.DataArray:
        """p(token) under each condition."""
        return self.label(self.probs[:, int(token)])

    def log_p(self, token: int) -> xr.DataArray:
        """log p(token): the logit up to the condition's log-normaliser."""
        return self.label(self.probs[:, int(token)].clamp_min(1e-45).log())

    def top(self) -> xr.DataArray:
        """The most probable next token under each condition."""
        return self.label(self.probs.argmax(-1), fill=-1)

    def flips(self, token: int) -> xr.DataArray:
        """Whether the most probable token is no longer `token`."""
        return self.label(self.probs.argmax(-1) != int(token), fill=False)


def _numbered(labels: list) -> bool:
    return labels == list(range(len(labels)))


def as_conditions(conditions: Grid | Sequence[Condition] | Condition) -> Grid:
    """A grid as it is; a list (or one condition) along a numbered `condition` dim."""
    if isinstance(conditions, Grid):
        return conditions
    if isinstance(conditions, (Cut, Patch, Ablate, Steer, tuple)):
        conditions = [conditions]
    items = list(conditions)
    return Grid(items, ("condition",), {"condition": list(range(len(items)))})


def compile_condition(
    condition: Condition,
    layout: Any,
    num_layers: int,
    ablation_source: Callable[[str], Run],
    blocked_of: Callable[[tuple[str, ...]], torch.Tensor],
) -> KnockoutCondition:
    """One condition as the engine runs it. `ablation_source(how)`: the run an ablation reads
    ("mean", "resample"); `blocked_of`: edge expressions' (L, L) cut matrix (memoised by the caller,
    so conditions share matrices and the engine scans each once)."""
    parts = condition if isinstance(condition, tuple) else (condition,)
    blocked: dict[int, torch.Tensor] = {}
    heads: tuple[int, ...] | None = None
    edits: list[Edit] = []
    for part in parts:
        if isinstance(part, Cut):
            expressions = [part.edges] if isinstance(part.edges, str) else list(part.edges)
            cut = blocked_of(tuple(expressions))
            if part.heads is not None:
                if heads is not None and tuple(part.heads) != heads:
                    raise ValueError("one condition cuts in one set of heads; split the cuts")
                heads = tuple(int(h) for h in part.heads)
            for layer in _checked(_layers(part.layers), num_layers, "Cut"):
                blocked[layer] = cut if layer not in blocked else blocked[layer] | cut
            continue
        if not isinstance(part, (Patch, Ablate, Steer)):
            raise TypeError(
                f"{part!r} is not an intervention: use Cut, Patch, Ablate or Steer (a tuple of "
                "them applies together)"
            )
        positions = torch.as_tensor(layout[part.group], dtype=torch.long)
        for layer in _checked(_layers(part.layers), num_layers, type(part).__name__):
            edits.append(_edit(part, layer, positions, ablation_source))
    return KnockoutCondition(blocked, heads, tuple(edits))


def _checked(layers: tuple[int, ...], num_layers: int, what: str) -> tuple[int, ...]:
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad or not layers:
        raise ValueError(
            f"{what}: layers {list(layers) or '(none)'} — the model has layers 0…{num_layers - 1}"
        )
    return layers


def _edit(
    part: Patch | Ablate | Steer,
    layer: int,
    positions: torch.Tensor,
    ablation_source: Callable[[str], Run],
) -> Edit:
    if isinstance(part, Steer):
        add = part.add
        if add is not None and add.dim() == 2 and add.shape[0] != len(positions):
            raise ValueError(
                f"Steer: add has {add.shape[0]} rows for group {part.group!r} of "
                f"{len(positions)} tokens; give one vector (d,) or one per token"
            )
        return Edit(part.site, layer, positions, float(part.scale), add)
    if isinstance(part, Ablate) and part.how == "zero":
        return Edit(part.site, layer, positions, 0.0, None)
    source = part.source if isinstance(part, Patch) else ablation_source(part.how)
    value = source.at(part.site, layer, part.group)
    if value.shape[0] != len(positions):
        raise ValueError(
            f"{type(part).__name__}: group {part.group!r} has {value.shape[0]} tokens in the "
            f"source run and {len(positions)} here; patch groups of equal size"
        )
    return Edit(part.site, layer, positions, 0.0, value)
