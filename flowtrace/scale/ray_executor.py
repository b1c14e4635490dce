"""executor=ray: samples sharded over Ray actors, one model copy per GPU (per CPU without GPUs).

Who writes the store: the driver, alone. Each worker sends a finished sample's cube back through
Ray's object store (KB to a few MB) and the driver appends the cubes in sample order, every cube
that is ready in order in one append. Why not workers writing their own samples, into regions of a
preallocated store or into per-worker shard stores merged at the end:
- zarr has no cross-process locks: two writers of one chunk, or of the consolidated metadata that
  marks which samples are whole, silently clobber each other; region writes need one chunk per
  sample and a "written" mark per sample, i.e. another layout and another resume rule than a
  serial run's, and shard stores exist as one cube only after the merge;
- workers on other nodes then need no shared filesystem, only the driver's disk;
- appending in sample order gives the serial run's store by construction: the same layout, the
  same order, the same resume (a killed driver leaves whole samples that the next run skips).
The cost is one writer; batching ready cubes keeps it far below the models' time (docs/scale.md).

A worker that dies (killed, out of memory, node lost) has its samples sent to another worker and
is replaced while the restart budget lasts; a sample whose worker died MAX_ATTEMPTS times stops
the run. Errors raised by flowtrace itself (bad options, a bug) stop the run at once.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from flowtrace.data import Sample
from flowtrace.errors import FlowtraceError, OptionError
from flowtrace.pipeline.options import RunOptions
from flowtrace.pipeline.passes import check_resumed_annotations
from flowtrace.recipe import Recipe
from flowtrace.store import CubeStore
from flowtrace.store.cube import SampleRecord

IN_FLIGHT = 2  # samples queued per worker, so a worker never waits for the driver between two
MAX_ATTEMPTS = 3  # worker deaths one sample may cause before the run stops
WORKER_PREFIX = "flowtrace-worker"  # Ray actor names: WORKER_PREFIX-<run>-<n>

Progress = Callable[[int, int, str], None]


class SampleWorker:
    """One model copy in one Ray actor; analyses the samples the driver sends, one at a time."""

    def __init__(
        self,
        recipe: Recipe,
        options: RunOptions,
        root: Path,
        samples: list[Sample],
        threads: int,
        store: Path,
    ) -> None:
        from flowtrace.pipeline.analysis import prepare_analysis

        if threads:  # CPU workers: one core each, not every core each
            torch.set_num_threads(threads)
        self.samples = samples
        # A set-up error is kept and raised by plan(): raised here it would look like a crash.
        self.error: Exception | None = None
        try:
            self.analysis = prepare_analysis(
                recipe, options, root, samples, stores={recipe.name: store}
            )
        except Exception as err:  # noqa: BLE001 - re-raised by plan() in the driver
            self.error = err

    def plan(self) -> tuple[dict[str, Any], int, Any]:
        """The store's attrs and schema as this worker sees them, and its process id."""
        if self.error is not None:
            raise self.error
        analysis = self.analysis
        return analysis.attrs, os.getpid(), analysis.measure.schema

    def analyse(self, index: int) -> SampleRecord:
        from flowtrace.pipeline.analysis import analyse_sample

        return analyse_sample([self.analysis], self.samples[index])[0]


def run_on_ray(
    recipe: Recipe,
    options: RunOptions,
    root: Path,
    samples: list[Sample],
    store: Path,
    progress: Progress | None = None,
) -> tuple[Path, int, int]:
    """Analyse `samples` on Ray workers into `store` (settled by the runner, pipeline.outputs);
    returns (store, samples resumed, samples retried)."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            # Workers' output would tear the driver's progress bar; their errors come back as
            # exceptions anyway.
            ray.init(
                address=options.address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise OptionError(
                "address",
                f"{options.address}: no Ray cluster there ({err}); start one with `ray start "
                "--head` on the head node, or leave the address setting out to start a local one",
            ) from None
    pool = _Pool(ray, recipe, options, root, samples, store)
    try:
        return pool.run(progress)
    finally:
        pool.close()
        if started_here:
            ray.shutdown()


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FlowtraceError(
            "executor=ray needs Ray: pip install 'flowtrace[ray]' (or pip install ray)"
        ) from None
    return ray


class _Pool:
    """The driver's side: workers, the queue of samples, retries and the in-order writes."""

    def __init__(
        self,
        ray: Any,
        recipe: Recipe,
        options: RunOptions,
        root: Path,
        samples: list[Sample],
        store: Path,
    ) -> None:
        self.ray, self.options, self.samples, self.store = ray, options, samples, store
        self.run_id = uuid.uuid4().hex[:8]
        count, resources, threads = _worker_shape(ray, options, len(samples))
        self.worker_class = ray.remote(**resources)(SampleWorker)
        self.args = (recipe, options, root, samples, threads, store)
        self.restarts = count  # replacements allowed, over the whole run
        self.spawned = 0
        self.starting: dict[Any, Any] = {}  # plan() ref -> actor still loading its model
        self.live: dict[Any, int] = {}  # actor -> samples queued on it
        self.dead: set[Any] = set()
        for _ in range(count):
            self._spawn()

    def _spawn(self) -> None:
        name = f"{WORKER_PREFIX}-{self.run_id}-{self.spawned}"
        self.spawned += 1
        actor = self.worker_class.options(name=name).remote(*self.args)
        self.starting[actor.plan.remote()] = actor

    def run(self, progress: Progress | None) -> tuple[Path, int, int]:
        with self._open_store() as store:
            return self._run(store, progress)

    def _run(self, store: CubeStore, progress: Progress | None) -> tuple[Path, int, int]:
        ray, errors = self.ray, self.ray.exceptions
        # As the serial pass: a sample whose annotation changed since it was stored is refused.
        check_resumed_annotations(store.path, store.done, self.samples)
        todo = [i for i, s in enumerate(self.samples) if s.id not in store.done]
        total, resumed = len(self.samples), len(self.samples) - len(todo)
        for done in range(1, resumed + 1):
            if progress:
                progress(done, total, "resumed")
        queue = deque(todo)
        attempts: Counter[int] = Counter()
        in_flight: dict[Any, tuple[Any, int]] = {}  # analyse() ref -> (actor, sample index)
        ready: dict[int, SampleRecord] = {}  # finished, waiting for the samples before them
        written, retried, finished = 0, 0, resumed
        while written < len(todo):
            for actor in self.live:
                while self.live[actor] < IN_FLIGHT and queue:
                    index = queue.popleft()
                    in_flight[actor.analyse.remote(index)] = (actor, index)
                    self.live[actor] += 1
            if not in_flight and not self.starting:
                raise FlowtraceError("every Ray worker died and the restart budget is spent")
            [ref], _ = ray.wait([*in_flight, *self.starting], num_returns=1)
            if ref in self.starting:
                self._started(ref)
                continue
            actor, index = in_flight.pop(ref)
            try:
                cube = ray.get(ref)
            except (errors.RayActorError, errors.WorkerCrashedError):
                attempts[index] += 1
                if attempts[index] >= MAX_ATTEMPTS:
                    raise FlowtraceError(
                        f"sample {self.samples[index].id}: its Ray worker died {MAX_ATTEMPTS} "
                        "times (out of GPU or host memory?); lower the batch_size setting, or "
                        "skip it with the tasks setting or the limit setting"
                    ) from None
                queue.appendleft(index)  # first in line again: the writes wait for it
                retried += 1
                self._lost(actor)
                continue
            except errors.RayTaskError as err:
                raise _cause(err) from None
            if actor in self.live:  # a worker may die after sending this cube: it still counts
                self.live[actor] -= 1
            ready[index] = cube
            finished += 1
            if progress:
                progress(finished, total, cube.status)
            batch = []
            while written < len(todo) and todo[written] in ready:
                batch.append(ready.pop(todo[written]))
                written += 1
            if batch:
                store.append(batch)  # the store's writer thread batches them further
        return store.path, resumed, retried

    def _open_store(self) -> CubeStore:
        """Wait for the first worker with its model loaded: its plan gives the store's attrs."""
        while not self.live:
            if not self.starting:
                raise FlowtraceError("every Ray worker died while loading the model")
            [ref], _ = self.ray.wait(list(self.starting), num_returns=1)
            plan = self._started(ref)
            if plan is not None:
                attrs, _, schema = plan
                attrs = {
                    **attrs,
                    "executor": f"ray ({len(self.live) + len(self.starting)} workers)",
                }
                return CubeStore(
                    self.store,
                    attrs,
                    self.options.overwrite,
                    schema=schema,
                    flush_samples=self.options.flush_samples,
                    flush_seconds=self.options.flush_seconds,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _started(self, ref: Any) -> tuple[dict[str, Any], int, Any] | None:
        actor = self.starting.pop(ref)
        try:
            plan = self.ray.get(ref)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.WorkerCrashedError):
            self._lost(actor)
            return None
        except self.ray.exceptions.RayTaskError as err:
            raise _cause(err) from None
        self.live[actor] = 0
        return plan

    def _lost(self, actor: Any) -> None:
        """Forget a dead worker (its other queued samples fail on their own) and replace it."""
        if actor in self.dead:
            return
        self.dead.add(actor)
        self.live.pop(actor, None)
        self.ray.kill(actor, no_restart=True)  # an unreachable actor may still hold its GPU
        if self.restarts > 0:
            self.restarts -= 1
            self._spawn()

    def close(self) -> None:
        for actor in [*self.live, *self.starting.values()]:
            self.ray.kill(actor, no_restart=True)
        self.live.clear()
        self.starting.clear()


def _worker_shape(ray: Any, options: RunOptions, samples: int) -> tuple[int, dict[str, Any], int]:
    """How many workers, the Ray resources of each, and torch threads each (0: leave as is)."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    if options.device != "cpu" and gpus >= options.gpus_per_worker:
        # One CPU each too: video decoding and input building run on the worker's host.
        count = int(gpus // options.gpus_per_worker)
        shape: dict[str, Any] = {"num_gpus": options.gpus_per_worker, "num_cpus": 1}
        threads = 0
    elif options.device == "cuda":
        raise OptionError(
            "device",
            f"cuda with executor=ray: the cluster has {gpus:g} GPUs, fewer than "
            f"gpus_per_worker={options.gpus_per_worker:g}; lower it or use device=cpu",
        )
    else:
        count, shape, threads = max(1, int(cpus)), {"num_cpus": 1}, 1
    if options.workers is not None:
        count = min(count, options.workers)
    return max(1, min(count, samples)), shape, threads


def _cause(err: Exception) -> BaseException:
    """The exception a worker raised, without Ray's wrapper: a FlowtraceError stays one line."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err
