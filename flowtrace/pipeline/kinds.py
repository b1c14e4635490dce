"""Each recipe kind's measure, in one registry: the runner asks it, never an isinstance chain.

A new kind registers here (and its figure with `flowtrace.plots`): `register_kind(MyRecipe,
Kind(make_measure, knocks_out=…, open_ended=…))`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from flowtrace.data import Sample, read_samples
from flowtrace.errors import FlowtraceError, RecipeError
from flowtrace.kinds.attention import AttentionMeasure
from flowtrace.kinds.declarations import (
    AttentionMap,
    EffectivePathway,
    FlowMap,
    Knockout,
    LayerProbe,
    Recipe,
    TraceProgram,
    VideoLogitLens,
)
from flowtrace.kinds.knockout import KnockoutMeasure
from flowtrace.kinds.pathway import PathwayMeasure
from flowtrace.kinds.probe import ProbeMeasure
from flowtrace.kinds.program import ProgramMeasure
from flowtrace.kinds.video_lens import VideoLensMeasure
from flowtrace.models import LoadedModel
from flowtrace.pipeline.options import RunOptions, Settled, resolve_data

Measure = KnockoutMeasure | ProbeMeasure | PathwayMeasure | VideoLensMeasure | AttentionMeasure

MakeMeasure = Callable[[Recipe, LoadedModel, RunOptions, Settled, list[Sample]], Measure]


@dataclass(frozen=True)
class Kind:
    measure: MakeMeasure
    knocks_out: bool = False  # runs knockouts (the fast engine applies)
    open_ended: bool = False  # analyses open-ended samples (the reference answer's first token)
    attn: str | None = None  # the attention implementation it needs (eager: attention weights)
    fast_clean: bool = False  # runs its clean pass on the fast engine (a capture it reuses)


def _knockout(recipe, loaded, options, settled, samples) -> KnockoutMeasure:
    return KnockoutMeasure(recipe, loaded, settled.sweep)


def data_pool(options: RunOptions, samples: list[Sample]) -> list[Sample]:
    """Every sample of the data, not the run's subset: what a sample's donors are drawn from and
    what labels such as a store's options span, so neither depends on --limit or --task (the
    run's samples where the data cannot be read again)."""
    try:
        return read_samples(resolve_data(options.data)) or list(samples)
    except FlowtraceError:
        return list(samples)


def _flow_map(recipe, loaded, options, settled, samples) -> KnockoutMeasure:
    most = max(data_pool(options, samples), key=lambda s: len(s.candidates))
    knockout = recipe.knockout(settled.num_frames, most.option_letters())
    return _knockout(knockout, loaded, options, settled, samples)


def _probe(recipe, loaded, options, settled, samples) -> ProbeMeasure:
    options_most = max(len(s.candidates) for s in data_pool(options, samples))
    return ProbeMeasure(recipe, loaded, options_most)


def _video_lens(recipe, loaded, options, settled, samples) -> VideoLensMeasure:
    return VideoLensMeasure(recipe, loaded, loaded.adapter.video_grid(loaded, settled.frames))


def _attention(recipe, loaded, options, settled, samples) -> AttentionMeasure:
    return AttentionMeasure(recipe, loaded, recipe.group_names(settled.num_frames))


def _pathway(recipe, loaded, options, settled, samples) -> PathwayMeasure:
    if options.random_ratio is not None:  # in [0, 1]: check_options
        recipe = dataclasses.replace(recipe, random_ratio=options.random_ratio)
    return PathwayMeasure(recipe, loaded, options.seed)


def _program(recipe, loaded, options, settled, samples) -> ProgramMeasure:
    pool = data_pool(options, samples)
    return ProgramMeasure(recipe, loaded, settled.frames, pool, options.seed, settled.sweep)


KINDS: dict[type, Kind] = {
    Knockout: Kind(_knockout, knocks_out=True, open_ended=True),
    FlowMap: Kind(_flow_map, knocks_out=True, open_ended=True),
    EffectivePathway: Kind(_pathway, knocks_out=True),
    LayerProbe: Kind(_probe),
    VideoLogitLens: Kind(_video_lens, open_ended=True),
    AttentionMap: Kind(_attention, attn="eager"),
    # Its clean pass on the fast engine: a program's interventions reuse that capture.
    TraceProgram: Kind(_program, fast_clean=True),  # open-ended where the recipe says so
}


def register_kind(recipe_type: type, kind: Kind) -> None:
    KINDS[recipe_type] = kind


def kind_of(recipe: Recipe) -> Kind:
    try:
        return KINDS[type(recipe)]
    except KeyError:
        raise RecipeError(
            f"recipe {getattr(recipe, 'name', recipe)!r}: no measure is registered for its kind "
            f"{type(recipe).__name__}"
        ) from None
