"""The serial pass: samples prefetched, each analysed by every recipe at once, records written by
each store's writer thread. Killed at any point, a rerun resumes where the stores stop."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path

from flowtrace.data import Sample
from flowtrace.engine.compiled import (
    COMPILE_PAYS_FROM,
    EAGER_FIRST_SAMPLES,
    RecomputeLayers,
    compile_deferred,
)
from flowtrace.errors import StoreError
from flowtrace.pipeline.analysis import Analysis, InFlight, finish_sample, load_inputs, start_sample
from flowtrace.pipeline.prefetch import prefetched
from flowtrace.store import SAMPLE, CubeStore, open_cube

Progress = Callable[[int, int, str], None]


def run_pass(
    analyses: list[Analysis], samples: list[Sample], progress: Progress | None = None
) -> tuple[list[Path], int]:
    """Every analysis over `samples` into its own store; returns the stores and how many samples
    all of them held already."""
    options = analyses[0].options
    with ExitStack() as stack:
        # Closing flushes what is buffered, also on Ctrl-C or an error: nothing analysed is lost.
        stores = [
            stack.enter_context(
                CubeStore(
                    a.out,
                    a.attrs,
                    overwrite=options.overwrite,
                    schema=a.measure.schema,
                    flush_samples=options.flush_samples,
                    flush_seconds=options.flush_seconds,
                )
            )
            for a in analyses
        ]
        for store in stores:
            check_resumed_annotations(store.path, store.done, samples)
        done = [set(s.done) for s in stores]
        todo = [s for s in samples if any(s.id not in d for d in done)]
        resumed = len(samples) - len(todo)
        finished = 0
        compile_later = deferred_compiles(analyses)
        for _ in range(resumed):
            finished += 1
            if progress:
                progress(finished, len(samples), "resumed")

        def finish(wanted: list[int], flight: InFlight) -> None:
            nonlocal finished
            records = finish_sample(flight)
            for i, record in zip(wanted, records, strict=True):
                stores[i].append(record)
            finished += 1
            left = len(todo) - (finished - resumed)
            if finished - resumed == EAGER_FIRST_SAMPLES and left >= COMPILE_PAYS_FROM:
                for layers in compile_later:
                    layers.resume()
            if progress:
                progress(finished, len(samples), records[0].status)

        # One sample in flight: its knockouts run on the device while the next sample's clean
        # pass and plans run, and it is finished (read back, recorded) after that.
        in_flight: tuple[list[int], InFlight] | None = None
        try:
            for sample, prepared in prefetched(
                todo, lambda s: load_inputs(analyses[0], s), analyses[0].prefetch
            ):
                wanted = [i for i, d in enumerate(done) if sample.id not in d]
                flight = start_sample([analyses[i] for i in wanted], sample, prepared)
                if in_flight is not None:
                    pending, in_flight = in_flight, None  # finished at most once
                    finish(*pending)
                if flight.overlaps:
                    in_flight = (wanted, flight)
                else:
                    finish(wanted, flight)
        except BaseException:
            # Ctrl-C or an error while waiting for or starting the next sample: the one in
            # flight is analysed already; record it before the error goes on.
            if in_flight is not None:
                with suppress(Exception):
                    finish(*in_flight)
            raise
        if in_flight is not None:
            finish(*in_flight)
    return [a.out for a in analyses], resumed


def deferred_compiles(analyses: list[Analysis]) -> list[RecomputeLayers]:
    """The compiling engines of a run left to the default (no `compile` setting, no
    FLOWTRACE_COMPILE), held back to run eagerly at first: the pass resumes them once its first
    samples are done, where the run is long enough to repay the compile."""
    if not compile_deferred(analyses[0].options.compile):
        return []
    engines = {id(a.engine): a.engine for a in analyses}.values()
    layers = [getattr(e, "recompute_layers", None) for e in engines]
    return [x for x in layers if isinstance(x, RecomputeLayers) and x.defer()]


def check_resumed_annotations(path: Path, done: set[str], samples: list[Sample]) -> None:
    """Refuse to resume a store whose finished samples the annotations now ask otherwise: a
    sample is done by its id, and an edited question, options or answer would keep the old
    results under it. Compared as `measure.sample_record` stores them."""
    again = [s for s in samples if s.id in done]
    if not again:
        return
    ds = open_cube(path, load=False)
    if not {"question", "candidates", "answer"} <= set(ds.coords):
        return  # a store written before these were kept
    ids = [str(i) for i in ds[SAMPLE].values]
    stored = {
        name: dict(zip(ids, (str(v) for v in ds[name].values), strict=True))
        for name in ("question", "candidates", "answer")
    }
    changed = []
    for sample in again:
        now = {
            "question": sample.question,
            "candidates": json.dumps(list(sample.candidates)),
            "answer": sample.answer,
        }
        differ = [name for name, value in now.items() if stored[name][sample.id] != value]
        if differ:
            changed.append((sample.id, differ[0], stored[differ[0]][sample.id], now[differ[0]]))
    if changed:
        sample_id, field, before, after = changed[0]
        field = "options" if field == "candidates" else field
        more = f" (and {len(changed) - 1} more samples)" if len(changed) > 1 else ""
        was, now = _where_they_differ(before, after)
        raise StoreError(
            f"store {path}: the annotation of sample {sample_id} changed since it was analysed"
            f"{more}: its {field} was {was}, is now {now}; its stored results answer the old "
            "one. Pass overwrite to analyse every sample again, or choose another out"
        )


def _where_they_differ(before: str, after: str, width: int = 60) -> tuple[str, str]:
    """The two texts around their first difference, at most `width` characters each."""
    first = next(
        (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b),
        min(len(before), len(after)),
    )
    start = max(0, first - width // 3)

    def cut(text: str) -> str:
        piece = text[start : start + width]
        return repr(("…" if start else "") + piece + ("…" if start + width < len(text) else ""))

    return cut(before), cut(after)
