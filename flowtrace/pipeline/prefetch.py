"""Samples decoded (decord) and processed (the model's processor) in a background thread while
the model works on the one before."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from flowtrace.data import Sample, SampleError

T = TypeVar("T")


def prefetched(
    samples: Iterable[Sample], load: Callable[[Sample], T], ahead: int
) -> Iterator[tuple[Sample, T | SampleError]]:
    """(sample, its inputs or the SampleError that stopped them), in order, `ahead` loading
    while the caller works. One worker: tokenizers and decord readers are not shared across
    threads, and one is enough to stay ahead of the model."""

    def attempt(sample: Sample) -> T | SampleError:
        try:
            return load(sample)
        except SampleError as err:
            return err

    if ahead <= 0:
        for sample in samples:
            yield sample, attempt(sample)
        return
    pending: deque[tuple[Sample, Future]] = deque()
    source = iter(samples)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowtrace-prefetch") as pool:
        try:
            for sample in source:
                pending.append((sample, pool.submit(attempt, sample)))
                if len(pending) > ahead:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()
