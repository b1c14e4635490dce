"""TOMATO: six tasks, each an annotation of entries {"question", "options", "answer" (the
correct option's index), "demonstration_type", "key", …}; the video of an entry is
videos/<demonstration_type>/<key>.mp4.

Annotations are read as published: jsons/<task>.json (the layout the reference code reads),
data/<task>.json (the GitHub repository: an object keyed "0", "1", …) or
data/<split>-*.parquet (the Hugging Face dataset, one split per task).
"""

from __future__ import annotations

from pathlib import Path

from flowtrace.data.annotations import (
    broken,
    lacking,
    load_json,
    load_parquet,
    sample_id,
    text,
    text_list,
)
from flowtrace.data.sample import Sample
from flowtrace.errors import DataError

# Task name (the reference's), JSON file, Hugging Face split.
TASKS = {
    "Count": ("count.json", "count"),
    "Direction": ("direction.json", "direction"),
    "Rotation": ("rotation.json", "rotation"),
    "ShapeTrend": ("shape&trend.json", "shape_trend"),
    "VelocityFrequency": ("velocity&frequency.json", "velocity_frequency"),
    "VisualCues": ("visual_cues.json", "visual_cues"),
}
FIELDS = ("question", "options", "answer", "demonstration_type", "key")


class Tomato:
    kind = "tomato"

    def _sources(self, root: Path) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {}
        for name, (file, split) in TASKS.items():
            for folder in (root / "jsons", root / "data"):
                if (folder / file).is_file():
                    found[name] = [folder / file]
                    break
            else:
                shards = sorted((root / "data").glob(f"{split}-*.parquet"))
                if shards:
                    found[name] = shards
        if not found:
            raise DataError(
                f"{root}: no TOMATO annotations; expected jsons/<task>.json, data/<task>.json or "
                "data/<task>-*.parquet (count, direction, rotation, shape&trend, "
                "velocity&frequency, visual_cues) next to videos/"
            )
        return found

    def task_names(self, root: Path) -> list[str]:
        return list(self._sources(root))

    def read_task(self, root: Path, name: str) -> list[Sample]:
        files = self._sources(root)[name]
        if files[0].suffix == ".json":
            data = load_json(files[0])
            if not isinstance(data, dict):
                raise DataError(f"{files[0]}: expected a JSON object of entries keyed by number")
            entries = list(data.values())  # file order, as the reference iterates them
        else:
            entries = load_parquet(files)
        return [_sample(root, name, i, entry) for i, entry in enumerate(entries)]


def _sample(root: Path, task: str, i: int, entry: object) -> Sample:
    problem = lacking(entry, FIELDS)
    if problem:
        return broken(task, i, problem)
    options = text_list(entry["options"])
    if options is None:
        return broken(task, i, "has 'options' that are not a list")
    answer = entry["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
        return broken(
            task, i, f"has answer {answer!r}; need the index (0–{len(options) - 1}) of an option"
        )
    return Sample(
        id=sample_id(task, i),
        task=task,
        video=root / "videos" / text(entry["demonstration_type"]) / f"{text(entry['key'])}.mp4",
        question=text(entry["question"]),
        candidates=options,
        answer=options[answer],
    )


TOMATO = Tomato()
