"""Reading annotation files as published: JSON and Parquet, one entry at a time.

A broken entry never stops a dataset from loading: it becomes a Sample whose `problem` says what
is wrong, and that sample alone fails when the runner validates it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from flowtrace.data.sample import Sample
from flowtrace.errors import DataError


def sample_id(task: str, index: int) -> str:
    """ "Moving Direction/0007": the entry's position in its task's annotation, file order."""
    return f"{task}/{index:04d}"


def broken(task: str, index: int, problem: str, video: Path | None = None) -> Sample:
    """A placeholder Sample for an entry that could not be read."""
    return Sample(
        id=sample_id(task, index),
        task=task,
        video=video or Path(),
        question="",
        candidates=(),
        answer="",
        problem=problem,
    )


def load_json(file: Path) -> object:
    try:
        return json.loads(Path(file).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{file}: not valid JSON ({err}); download the file again") from None


def json_list(file: Path) -> list[object]:
    entries = load_json(file)
    if not isinstance(entries, list):
        raise DataError(f"{file}: expected a JSON list of samples, found {type(entries).__name__}")
    return entries


def load_parquet(files: Iterable[Path]) -> list[dict[str, object]]:
    """Rows of one or more Parquet shards, in shard-name then row order."""
    import pyarrow.parquet as pq

    rows: list[dict[str, object]] = []
    for file in sorted(files):
        try:
            rows += pq.read_table(file).to_pylist()
        except (OSError, ValueError) as err:  # pyarrow's errors derive from these
            raise DataError(f"{file}: not a readable Parquet file ({err})") from None
    return rows


def lacking(entry: object, fields: Iterable[str]) -> str:
    """'' if `entry` is a JSON object with every field, else the problem, e.g. "lacks 'answer'"."""
    if not isinstance(entry, Mapping):
        return f"is a {type(entry).__name__}, not a JSON object"
    missing = [f for f in fields if entry.get(f) is None or entry.get(f) == ""]
    if missing:
        return f"lacks {', '.join(repr(f) for f in missing)} in its annotation"
    return ""


def text(value: object) -> str:
    return "" if value is None else str(value)


def text_list(value: object) -> tuple[str, ...] | None:
    """A list of strings as a tuple; None if `value` is not a list."""
    if isinstance(value, list | tuple):
        return tuple(text(v) for v in value)
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        return text_list(value.tolist())
    return None


def seconds(entry: Mapping, start: str = "start", end: str = "end") -> tuple[float, float] | str:
    """(start, end) seconds of an entry, or the problem with them."""
    try:
        bound = float(entry[start]), float(entry[end])
    except KeyError as err:
        return f"lacks {err.args[0]!r} (the clip's start/end seconds) in its annotation"
    except (TypeError, ValueError):
        return f"has start/end {entry.get(start)!r}, {entry.get(end)!r}; need two numbers"
    if not all(math.isfinite(x) for x in bound) or bound[1] < bound[0]:
        return f"has start/end {bound[0]}, {bound[1]}; need start ≤ end"
    return bound


def first_existing(folder: Path, stem: str, suffixes: Iterable[str]) -> Path:
    """folder/stem.<suffix> for the first suffix that exists, else with the first suffix (so the
    sample fails with "video not found" naming a path the user can check)."""
    suffixes = list(suffixes)
    for suffix in suffixes:
        path = folder / f"{stem}.{suffix}"
        if path.exists():
            return path
    return folder / f"{stem}.{suffixes[0]}"
