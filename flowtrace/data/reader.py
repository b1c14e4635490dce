"""Samples of a dataset: pick the benchmark's reader, the tasks, a seeded subset, a limit.

Tasks are numbered in sorted name order, as the reference code's `--task_id`. Each benchmark's
reader (tvbench.py, tomato.py, …) reads its published annotation files; a broken entry becomes a
sample that `validate_sample` fails alone, so one bad entry never stops a run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import re
from itertools import zip_longest
from pathlib import Path
from typing import Protocol

from flowtrace.data.longvideobench import LONGVIDEOBENCH
from flowtrace.data.sample import Sample, SampleError
from flowtrace.data.sources import DataSource, parse_data
from flowtrace.data.tomato import TOMATO
from flowtrace.data.tvbench import MVBENCH, TVBENCH, TVBENCH_OPEN
from flowtrace.data.vcgbench import VCGBENCH
from flowtrace.data.videomme import VIDEOMME
from flowtrace.errors import DataError, OptionError

# Options are shown as the letters A–Z, each one token in the tokenizers flowtrace reads.
MAX_OPTIONS = 26
# The reference's analysis scripts draw their `--test_ratio` subset with random.seed(42).
REFERENCE_SEED = 42


class Benchmark(Protocol):
    kind: str

    def task_names(self, root: Path) -> list[str]: ...

    def read_task(self, root: Path, name: str) -> list[Sample]: ...


READERS: dict[str, Benchmark] = {
    r.kind: r for r in (TVBENCH, TVBENCH_OPEN, MVBENCH, TOMATO, LONGVIDEOBENCH, VIDEOMME, VCGBENCH)
}


def task_name(slug: str) -> str:
    """ "moving_direction" -> "Moving Direction"."""
    return slug.replace("_", " ").title()


def as_source(data: DataSource | Path | str) -> DataSource:
    """A DataSource from a --data value; a Path is a folder in TVBench layout."""
    if isinstance(data, DataSource):
        return data
    if isinstance(data, Path):
        root = data.expanduser().absolute()
        if root.is_file():
            raise DataError(f"data={data} is a file; give the dataset's folder (json/ and video/)")
        if not root.is_dir():
            raise DataError(f"data={data}: no such folder")
        return DataSource(kind="tvbench", root=root, spec=str(data))
    return parse_data(data)


def _reader(source: DataSource) -> Benchmark:
    return READERS[source.layout]


def list_tasks(data: DataSource | Path | str) -> list[str]:
    """Sorted task names; a task's index in this list is what `--task 5` means."""
    source = as_source(data)
    return sorted(_reader(source).task_names(source.root))


def task_counts(data: DataSource | Path | str) -> dict[str, int]:
    """Samples per task, tasks in index order (broken entries counted: they fail when run)."""
    source = as_source(data)
    reader = _reader(source)
    return {name: len(reader.read_task(source.root, name)) for name in list_tasks(source)}


def read_samples(
    data: DataSource | Path | str,
    tasks: list[str] | None = None,
    limit: int | None = None,
    ratio: float | None = None,
    seed: int = REFERENCE_SEED,
) -> list[Sample]:
    """Samples of the chosen tasks, task by task (sorted by name), entries in file order.

    `tasks` holds names (any case; "_" or "-" for spaces) or indices into `list_tasks` as strings
    ("5"). `ratio` keeps a seeded random subset of each task, as the reference's `test_ratio`: a
    whole number ≥ 1 is a count per task, a share in (0, 1) keeps ⌊share·n⌋ (at least 1); the
    subset is `random.Random(seed).sample`, in its drawn order. `limit` then caps the total,
    taken round-robin over the tasks so that a small limit still covers every task.
    """
    source = as_source(data)
    reader = _reader(source)
    names = sorted(reader.task_names(source.root))
    chosen = sorted({_resolve_task(str(t), names, source) for t in tasks}) if tasks else names
    per_task = [
        [screen(s, source.root) for s in reader.read_task(source.root, name)] for name in chosen
    ]
    if ratio is not None:
        per_task = [subsample(samples, ratio, seed) for samples in per_task]
    if limit is None:
        return [s for samples in per_task for s in samples]
    if limit < 0:
        raise OptionError("limit", f"{limit} is negative; give 0 or more")
    mixed = [s for group in zip_longest(*per_task) for s in group if s is not None]
    picked = {s.id for s in mixed[:limit]}
    # Task order in the output, so results read task by task.
    return [s for samples in per_task for s in samples if s.id in picked]


def screen(sample: Sample, root: Path) -> Sample:
    """The sample, or a copy that fails alone (its `problem` set) where it has more options than
    there are letters, or names a video outside the dataset's folder."""
    if sample.problem:
        return sample
    if not sample.open_ended and len(sample.candidates) > MAX_OPTIONS:
        return dataclasses.replace(
            sample,
            candidates=(),
            problem=f"has {len(sample.candidates)} options, more than the {MAX_OPTIONS} letters "
            "A–Z that name them; keep at most 26 candidates",
        )
    if sample.video.name and not inside(sample.video, root):
        return dataclasses.replace(
            sample,
            problem=f"names a video outside the dataset folder {root} ({sample.video}); "
            "videos must lie under the folder given as data",
        )
    return sample


def inside(path: Path, root: Path) -> bool:
    """Whether `path` lies under `root`: as written (a symlink under the root may point to
    another disk) or, where it climbs with `..`, once resolved."""
    if ".." not in path.parts and Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root)):
        return True
    return path.resolve().is_relative_to(root.resolve())


def subsample(samples: list[Sample], ratio: float, seed: int = REFERENCE_SEED) -> list[Sample]:
    """A seeded subset of one task's samples (see `read_samples`)."""
    if not math.isfinite(ratio) or ratio <= 0:
        raise OptionError("ratio", f"{ratio} is neither a share in (0, 1) nor a count ≥ 1 per task")
    if ratio >= 1 and ratio != int(ratio):
        raise OptionError("ratio", f"{ratio} is above 1 but not a whole count of samples per task")
    count = int(ratio) if ratio >= 1 else max(1, int(len(samples) * ratio))
    return random.Random(seed).sample(samples, min(count, len(samples)))


def _normal(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


def _resolve_task(task: str, names: list[str], source: DataSource) -> str:
    if task.isdigit() and int(task) < len(names):
        return names[int(task)]
    for name in names:
        if _normal(name) == _normal(task):
            return name
    listing = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    raise OptionError("tasks", f"{task!r} is not a task of {source.spec}; tasks: {listing}")


def validate_sample(sample: Sample, allow_open_ended: bool = False) -> None:
    """Raise SampleError naming what is wrong with one sample's annotation or video file.

    Open-ended samples (VCGBench, tvbench-open) pass only with `allow_open_ended`: the recipes
    that score option letters (knockout, probes) cannot use them, and say so per sample.
    """
    if sample.problem:
        raise SampleError(f"sample {sample.id} {sample.problem}; fix the annotation")
    if sample.open_ended and not allow_open_ended:
        raise SampleError(
            f"sample {sample.id} is open-ended (no options to pick from); this recipe scores "
            "option letters and needs a multiple-choice dataset (e.g. tvbench, not tvbench-open)"
        )
    missing = [f for f in ("question", "answer") if not getattr(sample, f)]
    if not sample.open_ended and not sample.candidates:
        missing.append("candidates")
    if sample.video.name == "":
        missing.append("video")
    if missing:
        raise SampleError(f"sample {sample.id} lacks {', '.join(missing)} in its annotation")
    if not sample.open_ended:
        if len(sample.candidates) < 2:
            raise SampleError(
                f"sample {sample.id} has {len(sample.candidates)} candidate; "
                "a question needs 2 or more"
            )
        sample.option_letters()  # more options than letters fail here
        if len(set(sample.candidates)) < len(sample.candidates):
            raise SampleError(f"sample {sample.id} repeats a candidate: {list(sample.candidates)}")
        sample.answer_index()
    if sample.bound is not None:
        start, end = sample.bound
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise SampleError(
                f"sample {sample.id} has a bad start/end ({start}, {end}); "
                "need two numbers, start ≤ end"
            )
    if not sample.video.exists():
        raise SampleError(
            f"video not found: {sample.video} — check the dataset folder given as data"
        )
