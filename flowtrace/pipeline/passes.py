"""The serial pass: samples prefetched, each analysed by every recipe at once, records written by
each store's writer thread. Killed at any point, a rerun resumes where the stores stop."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path

from flowtrace.data import Sample
from flowtrace.pipeline.analysis import Analysis, InFlight, finish_sample, load_inputs, start_sample
from flowtrace.pipeline.prefetch import prefetched
from flowtrace.store import CubeStore

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
        done = [set(s.done) for s in stores]
        todo = [s for s in samples if any(s.id not in d for d in done)]
        resumed = len(samples) - len(todo)
        finished = 0
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
