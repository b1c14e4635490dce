"""Video-MME: ROOT/videomme/test-*.parquet with rows {"videoID", "url", "question_id",
"task_type", "question", "options" (["A. …", "B. …", …]), "answer" (a letter), …}; videos in
ROOT/data/<videoID>.mp4 (or .avi, .mov, .mkv). Tasks are the task types.

The options keep their letters in the prompt ("A. Apples."), as the reference shows them, so
samples are in the "letters" style; candidates hold the text after "A. ". Subtitles are left
out, as in the reference.
"""

from __future__ import annotations

from pathlib import Path

from flowtrace.data.annotations import (
    broken,
    first_existing,
    lacking,
    load_parquet,
    sample_id,
    text,
    text_list,
)
from flowtrace.data.sample import Sample
from flowtrace.errors import DataError

FIELDS = ("question", "options", "answer", "task_type")
VIDEO_SUFFIXES = ("mp4", "avi", "mov", "mkv")
YOUTUBE = "https://www.youtube.com/watch?v="


class VideoMME:
    kind = "videomme"

    def _rows(self, root: Path) -> list[dict[str, object]]:
        shards = sorted((root / "videomme").glob("test-*.parquet"))
        if not shards:
            raise DataError(
                f"{root}: no videomme/test-*.parquet; a Video-MME folder holds "
                "videomme/test-00000-of-00001.parquet and data/ with the videos"
            )
        return load_parquet(shards)

    def task_names(self, root: Path) -> list[str]:
        return list(dict.fromkeys(text(r.get("task_type")) for r in self._rows(root)))

    def read_task(self, root: Path, name: str) -> list[Sample]:
        rows = [r for r in self._rows(root) if text(r.get("task_type")) == name]
        return [_sample(root, name, i, row) for i, row in enumerate(rows)]


def _sample(root: Path, task: str, i: int, row: dict[str, object]) -> Sample:
    problem = lacking(row, FIELDS)
    video_id = text(row.get("videoID")) or text(row.get("url")).removeprefix(YOUTUBE)
    if not problem and not video_id:
        problem = "lacks 'videoID' (and 'url') in its annotation"
    if problem:
        return broken(task, i, problem)
    options = text_list(row["options"]) or ()
    letters = [chr(ord("A") + k) for k in range(len(options))]
    lettered = all(o.startswith(f"{x}. ") for x, o in zip(letters, options, strict=True))
    if not options or not lettered:
        return broken(task, i, f"has options {list(options)}; need 'A. …', 'B. …', … in order")
    answer = text(row["answer"]).strip()
    if answer not in letters:
        return broken(task, i, f"has answer {answer!r}; need one of the letters {letters}")
    candidates = tuple(o[3:] for o in options)
    return Sample(
        id=sample_id(task, i),
        task=task,
        video=first_existing(root / "data", video_id, VIDEO_SUFFIXES),
        question=text(row["question"]),
        candidates=candidates,
        answer=candidates[letters.index(answer)],
        style="letters",
    )


VIDEOMME = VideoMME()
