"""LongVideoBench: ROOT/lvb_val.json, a list of entries {"id", "video_path", "question",
"candidates", "correct_choice" (an index), "question_category", "duration", …}; videos in
ROOT/videos/. Tasks are the question categories ("E2O", "S2A", …).

Frames follow LongVideoBench's own loader, as the reference code reads this benchmark: a fixed
stride over the annotated `duration`, not segment midpoints (see video.stride_indices).
Subtitles are left out, as in the reference's analysis.
"""

from __future__ import annotations

import math
from pathlib import Path

from flowtrace.data.annotations import broken, json_list, lacking, sample_id, text, text_list
from flowtrace.data.sample import FrameRule, Sample
from flowtrace.errors import DataError

ANNOTATION = "lvb_val.json"
FIELDS = ("video_path", "question", "candidates", "correct_choice", "duration")
CATEGORY = "question_category"


class LongVideoBench:
    kind = "longvideobench"

    def _entries(self, root: Path) -> list[object]:
        file = root / ANNOTATION
        if not file.is_file():
            raise DataError(
                f"{root}: no {ANNOTATION}; a LongVideoBench folder holds {ANNOTATION} and videos/"
            )
        return json_list(file)

    def task_names(self, root: Path) -> list[str]:
        return list(dict.fromkeys(_category(e) for e in self._entries(root)))

    def read_task(self, root: Path, name: str) -> list[Sample]:
        entries = [e for e in self._entries(root) if _category(e) == name]
        return [_sample(root, name, i, entry) for i, entry in enumerate(entries)]


def _category(entry: object) -> str:
    # Entries without a category still load (and fail alone) under a task of their own.
    category = text(entry.get(CATEGORY)) if isinstance(entry, dict) else ""
    return category or "(no category)"


def _sample(root: Path, task: str, i: int, entry: object) -> Sample:
    problem = lacking(entry, FIELDS)
    if problem:
        return broken(task, i, problem)
    candidates = text_list(entry["candidates"])
    if candidates is None:
        return broken(task, i, "has 'candidates' that are not a list")
    choice = entry["correct_choice"]
    if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < len(candidates):
        return broken(
            task, i, f"has correct_choice {choice!r}; need the index of one of its candidates"
        )
    try:
        duration = float(entry["duration"])
    except (TypeError, ValueError):
        duration = math.nan
    if not math.isfinite(duration) or duration <= 0:
        return broken(task, i, f"has duration {entry['duration']!r}; need seconds > 0")
    return Sample(
        id=sample_id(task, i),
        task=task,
        video=root / "videos" / text(entry["video_path"]),
        question=text(entry["question"]),
        candidates=candidates,
        answer=candidates[choice],
        frame_rule=FrameRule(duration=duration),
    )


LONGVIDEOBENCH = LongVideoBench()
