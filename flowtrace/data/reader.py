"""Datasets in TVBench/MVBench layout: ROOT/json/<task>.json and ROOT/video/<task>/<file>."""

from __future__ import annotations

import json
from itertools import zip_longest
from pathlib import Path

from flowtrace.data.sample import Sample, SampleError


def task_name(slug: str) -> str:
    return slug.replace("_", " ").title()


def _task_files(root: Path) -> dict[str, Path]:
    folder = Path(root) / "json"
    if not folder.is_dir():
        raise ValueError(
            f"--data {root}: no json/ folder with task annotation files; expected "
            "ROOT/json/<task>.json and ROOT/video/<task>/"
        )
    return {task_name(p.stem): p for p in sorted(folder.glob("*.json"))}


def list_tasks(root: Path) -> list[str]:
    return sorted(_task_files(root))


def read_samples(
    root: Path, tasks: list[str] | None = None, limit: int | None = None
) -> list[Sample]:
    """Samples of the chosen tasks (names or indices); `limit` is spread round-robin over tasks."""
    files = _task_files(root)
    names = sorted(files)
    chosen = names if not tasks else [_resolve_task(t, names, root) for t in tasks]
    per_task = [_read_task(Path(root), name, files[name]) for name in chosen]
    if limit is None:
        return [s for samples in per_task for s in samples]
    mixed = [s for group in zip_longest(*per_task) for s in group if s is not None]
    picked = {s.id for s in mixed[:limit]}
    # Keep task order in the output so results read task by task.
    return [s for samples in per_task for s in samples if s.id in picked]


def _resolve_task(task: str, names: list[str], root: Path) -> str:
    if task.isdigit() and int(task) < len(names):
        return names[int(task)]
    for name in names:
        if name.lower() == task.lower():
            return name
    listing = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    raise ValueError(f"--task {task!r} is not a task of {root}; tasks: {listing}")


def _read_task(root: Path, name: str, file: Path) -> list[Sample]:
    try:
        entries = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
    samples = []
    for i, entry in enumerate(entries):
        has_bound = "start" in entry and "end" in entry
        samples.append(
            Sample(
                id=f"{name}/{i:04d}",
                task=name,
                video=root / "video" / file.stem / entry["video"] if entry.get("video") else Path(),
                question=str(entry.get("question", "")),
                candidates=tuple(str(c) for c in entry.get("candidates", ())),
                answer=str(entry.get("answer", "")),
                bound=(float(entry["start"]), float(entry["end"])) if has_bound else None,
            )
        )
    return samples


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
        raise SampleError(f"sample {sample.id} has fewer than 2 candidates")
    sample.answer_index()
    if not sample.video.exists():
        raise SampleError(
            f"video not found: {sample.video} — check the dataset root given with --data"
        )
