"""What a process needs to analyse samples, built once (by the driver, or by each Ray worker),
and one sample analysed by every recipe of a pass."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flowtrace.data import Sample, SampleError, sample_frames, validate_sample
from flowtrace.engine import ReferenceEngine, make_engine
from flowtrace.engine.compiled import (
    COMPILE_PAYS_FROM,
    EAGER_FIRST_SAMPLES,
    compile_deferred,
)
from flowtrace.engine.reference import Launched
from flowtrace.engine.remote import remote_trace_kwargs, route_traces
from flowtrace.errors import OptionError
from flowtrace.kinds.common import Clean, Plan, Step, measure_clean, record_clean, sample_record
from flowtrace.models import LoadedModel, Prepared, load_model
from flowtrace.models.context import check_prompt, context_length
from flowtrace.pipeline.kinds import Measure, kind_of
from flowtrace.pipeline.options import RunOptions, resolve_data, settle
from flowtrace.pipeline.outputs import settle_outputs
from flowtrace.pipeline.provenance import provenance
from flowtrace.recipe import Knockout, Recipe, check_groups
from flowtrace.store.cube import SampleRecord


@dataclass
class Analysis:
    """One recipe set up on a loaded model: its engine, measure, store path and provenance."""

    recipe: Recipe
    options: RunOptions
    loaded: LoadedModel
    engine: ReferenceEngine
    measure: Measure
    frames: int
    attrs: dict[str, str | int | float]  # the store's provenance
    out: Path
    open_ended: bool = False  # whether the recipe analyses open-ended samples
    root: Path | None = None  # videos are stored relative to it (None: as the data names them)
    prefetch: int = 0  # samples decoded and processed ahead of the model (settled)


def with_generate(recipe: Recipe, generate: int | None) -> Recipe:
    """The recipe with `generate=N` applied (knockout recipes only)."""
    if generate is None:
        return recipe
    if not isinstance(recipe, Knockout):
        raise OptionError(
            "generate",
            f"recipe {recipe.name} is a {type(recipe).__name__}; greedy replies under knockout "
            "are for knockout recipes (e.g. recipes/open_ended.py)",
        )
    return dataclasses.replace(recipe, generate=generate)  # its bound: check_options


def load_run_model(options: RunOptions, attn: str | None = None) -> LoadedModel:
    """The model a run's settings name (`attn`: the attention its recipes need, else the
    setting's)."""
    return load_model(
        options.model,
        device=options.device,
        dtype=options.dtype,
        attn=attn or options.attn,
        adapter=options.adapter,
        pooling=options.pooling,
        lora=options.lora,
        weights=not options.random_weights,
    )


def prepare_analyses(
    recipes: list[Recipe],
    options: RunOptions,
    root: Path,
    samples: list[Sample],
    loaded: LoadedModel | None = None,
    stores: Mapping[str, Path] | None = None,
) -> list[Analysis]:
    """Load the model once (unless given) and set up each recipe on it; recipes that use the same
    engine share it, so a pass runs one clean forward per sample for all of them. `stores`: each
    recipe's store, as the runner settled them (pipeline.outputs; default: settled here)."""
    torch.manual_seed(options.seed)
    for recipe in recipes:  # recipes made in code, not loaded from a file, are checked here
        check_groups(recipe)
    recipes = [with_generate(r, options.generate) for r in recipes]
    # A kind's need, or a trace program's own declaration (it reads attention weights).
    need = {id(r): getattr(r, "attn", None) or kind_of(r).attn for r in recipes}
    needs = set(need.values()) - {None}
    if needs and len(recipes) > 1:
        raise OptionError(
            "recipes",
            f"{', '.join(r.name for r in recipes if need[id(r)])} needs {needs.pop()} "
            "attention, which would change the other recipes' numbers: run it on its own",
        )
    attn = next(iter(needs)) if needs else options.attn
    if loaded is not None and needs and loaded.attn != attn:
        raise OptionError("attn", f"{recipes[0].name} needs {attn} attention; load the model so")
    loaded = loaded or load_run_model(options, attn)
    trace_kwargs, trace_target = remote_trace_kwargs(options)
    settled = settle(
        options,
        loaded.num_layers,
        loaded.num_heads,
        loaded.adapter.default_frames,
        lambda frames: loaded.adapter.video_grid(loaded, frames)[0],
        computes_on_this_cpu=loaded.device.type == "cpu" and not trace_kwargs,
        video_tokens=lambda frames: math.prod(loaded.adapter.video_grid(loaded, frames)),
        context=context_length(loaded.model),
    )
    route_traces(loaded, trace_kwargs)
    source = resolve_data(options.data)
    engines: dict[str, ReferenceEngine] = {}
    names = [r.name for r in recipes]
    stores = stores or settle_outputs(names, options, loaded.model_id).stores
    analyses = []
    for recipe in recipes:
        kind = kind_of(recipe)
        knocks_out = (kind.knocks_out or kind.fast_clean) and not options.eval_only
        # Generation has no shortcut (docs/design.md): its replies run the reference path.
        generates = isinstance(recipe, Knockout) and recipe.generate > 0
        if trace_kwargs and generates:
            raise OptionError(
                "generate",
                f"{recipe.generate} with remote/serve: a reply's steps share a K/V cache that "
                "would stay on the server between traces; generate locally, or pass generate 0 "
                "for the first-token scores alone",
            )
        if trace_kwargs and not getattr(recipe, "remote", True):
            raise OptionError(
                "remote",
                f"recipe {recipe.name} runs the model's modules itself (not only nnsight "
                "traces), which needs the model here: run it without remote/serve",
            )
        engine_name = options.engine if knocks_out and not generates else "reference"
        if trace_kwargs:
            # Only whole nnsight traces travel to a server; the fast engine runs modules itself.
            engine_name = "reference"
        if engine_name not in engines:
            engines[engine_name] = make_engine(
                engine_name, loaded, options.batch_size, options.compile
            )
        engine = engines[engine_name]
        out = stores[recipe.name]
        attrs = provenance(recipe, loaded, options, source.kind, root, settled, engine.name)
        attrs.update(executor=options.executor, traces=trace_target)
        # Not a resume key: compiled and eager layers compute the same function (the fast
        # engine's self-check holds both to the reference path), rounding aside.
        compiles = bool(getattr(engine, "compile", False))
        attrs["compiled_layers"] = (
            "no"
            if not compiles
            else f"after {EAGER_FIRST_SAMPLES} samples, where {COMPILE_PAYS_FROM} or more are left"
            # The serial pass defers (passes.deferred_compiles); Ray workers compile at once.
            if compile_deferred(options.compile) and options.executor == "serial"
            else "yes"
        )
        measure = kind.measure(recipe, loaded, options, settled, samples)
        # What a measure says of its own variables (definitions, units) joins the provenance.
        attrs.update(getattr(measure, "attrs", {}))
        analyses.append(
            Analysis(
                recipe,
                options,
                loaded,
                engine,
                measure,
                settled.frames,
                attrs,
                out,
                kind.open_ended or bool(getattr(recipe, "open_ended", False)),
                None if options.absolute_paths else root,
                settled.prefetch,
            )
        )
    return analyses


def prepare_analysis(
    recipe: Recipe,
    options: RunOptions,
    root: Path,
    samples: list[Sample],
    loaded: LoadedModel | None = None,
    stores: Mapping[str, Path] | None = None,
) -> Analysis:
    return prepare_analyses([recipe], options, root, samples, loaded, stores)[0]


def load_inputs(analysis: Analysis, sample: Sample) -> Prepared:
    """Decode the sample's frames (its bound and the benchmark's rule) and build the model's
    inputs; the prefetcher runs this ahead of the model."""
    validate_sample(sample, allow_open_ended=True)
    # The adapter picks its frames where its model reads them its own way (VideoLLaMA3).
    video = sample_frames(sample, analysis.frames, analysis.loaded.adapter)
    prepared = analysis.loaded.adapter.prepare(analysis.loaded, sample, video)
    check_prompt(analysis.loaded.model, prepared, sample, getattr(analysis.recipe, "generate", 0))
    return prepared


@dataclass
class InFlight:
    """One sample between `start_sample` and `finish_sample`: its records, clean answers and
    plans, and the knockouts each engine has been given."""

    group: list[Analysis]
    sample: Sample
    prepared: Prepared | SampleError | None
    records: list[SampleRecord]
    cleans: dict[int, Clean] = field(default_factory=dict)  # one clean pass per engine
    plans: dict[int, Plan] = field(default_factory=dict)
    launched: dict[int, Launched] = field(default_factory=dict)  # by engine

    @property
    def overlaps(self) -> bool:
        """Whether the next sample may start before this one finishes: nothing of this one is
        left to run but the knockouts already queued."""
        return not any(plan.fill_runs_model for plan in self.plans.values())


def analyse_sample(
    group: list[Analysis],
    sample: Sample,
    prepared: Prepared | SampleError | None = None,
) -> list[SampleRecord]:
    """One sample's records, a record per analysis; the serial pass and every Ray worker call
    exactly this (the serial pass in two halves, `start_sample` and `finish_sample`, so the
    next sample's clean pass runs while the device works on this one's knockouts).
    `prepared`: the inputs (or the reason they could not be made) if the prefetcher made them
    already."""
    return finish_sample(start_sample(group, sample, prepared))


def start_sample(
    group: list[Analysis],
    sample: Sample,
    prepared: Prepared | SampleError | None = None,
) -> InFlight:
    """The sample's clean pass, each recipe's plan, and every recipe's knockouts started on
    their engine (one call per engine)."""
    records = [sample_record(sample, a.measure.schema, a.root) for a in group]
    if prepared is None:
        try:
            prepared = load_inputs(group[0], sample)
        except SampleError as err:
            prepared = err
    flight = InFlight(group, sample, prepared, records)
    live: list[int] = []
    for index, analysis in enumerate(group):
        try:
            if sample.open_ended and not analysis.open_ended:
                validate_sample(sample, allow_open_ended=False)  # raises with its reason
            if isinstance(prepared, SampleError):
                raise prepared
            live.append(index)
        except SampleError as err:
            _failed(records[index], err)
    if not live or isinstance(prepared, SampleError):
        return flight
    for index in live:
        analysis, record = group[index], records[index]
        options = analysis.options
        try:
            key = id(analysis.engine)
            if key not in flight.cleans:
                flight.cleans[key] = measure_clean(
                    analysis.loaded, analysis.engine, prepared, sample
                )
            clean = flight.cleans[key]
            record_clean(record, clean)
            if options.eval_only:
                record.coords["status"] = "ok"
            elif excluded(options.sample_mode, clean.correct):
                record.coords["status"] = "skipped"
                verdict = "right" if clean.correct else "wrong"
                record.coords["reason"] = (
                    f"--sample-mode {options.sample_mode}: clean answer is {verdict}"
                )
            else:
                flight.plans[index] = analysis.measure.plan(
                    prepared, sample, clean, analysis.engine
                )
        except SampleError as err:
            _failed(record, err)
    # Every recipe's knockouts on one engine go through it as one batch.
    for engine_id, indices in _by_engine(flight).items():
        knockouts = [k for i in indices for k in flight.plans[i].knockouts]
        if knockouts:
            flight.launched[engine_id] = group[indices[0]].engine.launch(prepared.inputs, knockouts)
    return flight


def finish_sample(flight: InFlight) -> list[SampleRecord]:
    """Read the knockouts back and let each recipe record them (or run its own reads)."""
    group, records = flight.group, flight.records
    prepared = flight.prepared
    for engine_id, indices in _by_engine(flight).items():
        engine = group[indices[0]].engine
        launched = flight.launched.get(engine_id)
        rows = launched.result() if launched is not None else None
        start = 0
        for index in indices:
            analysis, record, plan = group[index], records[index], flight.plans[index]
            count = len(plan.knockouts)
            mine = rows[start : start + count] if rows is not None else None
            start += count
            try:
                clean = flight.cleans[engine_id]
                step = Step(flight.sample, engine, prepared, clean, record, plan, mine)
                analysis.measure.fill(step)
                # A recipe that ran its own reads finished before the next sample's clean pass,
                # so the engine's own record of its paths is this sample's.
                used = engine.used if launched is None else launched.used
                note = getattr(engine, "fallback_reason", "") if launched is None else launched.note
                record.coords["engine"] = "+".join(sorted(used))
                record.coords["engine_note"] = note or ""
                record.coords["status"] = "ok"
            except SampleError as err:
                _failed(record, err)
    return records


def _by_engine(flight: InFlight) -> dict[int, list[int]]:
    by_engine: dict[int, list[int]] = {}
    for index in flight.plans:
        by_engine.setdefault(id(flight.group[index].engine), []).append(index)
    return by_engine


def _failed(record: SampleRecord, err: SampleError) -> None:
    record.coords["status"] = "failed"
    record.coords["reason"] = str(err)


def excluded(sample_mode: str, correct: bool) -> bool:
    return (sample_mode == "correct" and not correct) or (sample_mode == "wrong" and correct)
