"""Datasets in TVBench/MVBench layout: ROOT/json/<task>.json and ROOT/video/<task>/<file>.

Each JSON file is a list of entries {"video", "question", "candidates", "answer"} with optional
"start"/"end" seconds. A broken entry does not stop reading: it becomes a Sample with empty fields
that `validate_sample` rejects, so one bad sample fails alone instead of the whole run.
"""

from __future__ import annotations

import json
import math
from itertools import zip_longest
from pathlib import Path

from flowtrace.data.sample import Sample, SampleError

REQUIRED = ("video", "question", "candidates", "answer")


def task_name(slug: str) -> str:
    """ "moving_direction" -> "Moving Direction"."""
    return slug.replace("_", " ").title()


def _task_files(root: Path) -> dict[str, Path]:
    folder = Path(root) / "json"
    if not folder.is_dir():
        raise ValueError(
            f"--data {root}: no json/ folder with task annotation files; expected "
            "ROOT/json/<task>.json and ROOT/video/<task>/"
        )
    files: dict[str, Path] = {}
    for file in sorted(folder.glob("*.json")):
        name = task_name(file.stem)
        if name in files:
            raise ValueError(f"{files[name].name} and {file.name} both name the task {name!r}")
        files[name] = file
    return files


def list_tasks(root: Path) -> list[str]:
    """Sorted task names of a dataset folder."""
    return sorted(_task_files(root))


def read_samples(
    root: Path, tasks: list[str] | None = None, limit: int | None = None
) -> list[Sample]:
    """Samples of the chosen tasks, task by task (sorted by name), entries in file order.

    `tasks` holds names ("Moving Direction", any case, or the slug) or indices into
    `list_tasks(root)` as strings ("0"). `limit` caps the total, taken round-robin over the tasks
    so that a small limit still covers every task.
    """
    root = Path(root).absolute()
    files = _task_files(root)
    names = sorted(files)
    chosen = sorted({_resolve_task(str(t), names, root) for t in tasks}) if tasks else names
    per_task = [_read_task(root, name, files[name]) for name in chosen]
    if limit is None:
        return [s for samples in per_task for s in samples]
    if limit < 0:
        raise ValueError(f"--limit {limit}: must be 0 or more")
    mixed = [s for group in zip_longest(*per_task) for s in group if s is not None]
    picked = {s.id for s in mixed[:limit]}
    # Task order in the output, so results read task by task.
    return [s for samples in per_task for s in samples if s.id in picked]


def _resolve_task(task: str, names: list[str], root: Path) -> str:
    if task.isdigit() and int(task) < len(names):
        return names[int(task)]
    for name in names:
        if name.lower() == task_name(task.strip()).lower():
            return name
    listing = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    raise ValueError(f"--task {task!r} is not a task of {root}; tasks: {listing}")


def _read_task(root: Path, name: str, file: Path) -> list[Sample]:
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{file}: expected a JSON list of samples, found {type(entries).__name__}")
    return [_sample(root, name, file.stem, i, entry) for i, entry in enumerate(entries)]


def _sample(root: Path, name: str, slug: str, i: int, entry: object) -> Sample:
    entry = entry if isinstance(entry, dict) else {}
    video = entry.get("video")
    candidates = entry.get("candidates")
    return Sample(
        id=f"{name}/{i:04d}",
        task=name,
        # An empty Path (".") marks a missing file name; validate_sample reports it.
        video=root / "video" / slug / str(video) if video else Path(),
        question=_text(entry.get("question")),
        candidates=tuple(_text(c) for c in candidates) if isinstance(candidates, list) else (),
        answer=_text(entry.get("answer")),
        bound=_bound(entry),
    )


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _bound(entry: dict) -> tuple[float, float] | None:
    if "start" not in entry and "end" not in entry:
        return None
    try:
        return float(entry["start"]), float(entry["end"])
    except (KeyError, TypeError, ValueError):
        # NaN keeps the sample readable; validate_sample names the bad bound.
        return math.nan, math.nan


def validate_sample(sample: Sample) -> None:
    """Raise SampleError naming what is wrong with one sample's annotation or video file."""
    missing = [f for f in ("question", "answer") if not getattr(sample, f)]
    if not sample.candidates:
        missing.append("candidates")
    if sample.video.name == "":
        missing.append("video")
    if missing:
        raise SampleError(f"sample {sample.id} lacks {', '.join(missing)} in its annotation")
    if len(sample.candidates) < 2:
        raise SampleError(
            f"sample {sample.id} has {len(sample.candidates)} candidate; a question needs 2 or more"
        )
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
            f"video not found: {sample.video} — check the dataset root given with --data"
        )
