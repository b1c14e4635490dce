"""VCGBench (the Video-ChatGPT benchmark): ROOT/Benchmarking_QA/<task>.json with entries
{"Q", "A", "video_name"} ({"Q1", "Q2", "A", "video_name"} in consistency_qa); videos in
ROOT/Test_Videos/<video_name>.mp4 (or .mkv). Tasks keep the reference's names: generic_qa,
temporal_qa, consistency_qa.

The benchmark is open-ended: no candidates, `answer` is the reference answer, and the question is
shown as written ("plain" style). consistency_qa asks Q1, as the reference's analysis does.
"""

from __future__ import annotations

from pathlib import Path

from flowtrace.data.annotations import broken, first_existing, json_list, lacking, sample_id, text
from flowtrace.data.sample import Sample
from flowtrace.errors import DataError

TASKS = {
    "consistency_qa": "Q1",
    "generic_qa": "Q",
    "temporal_qa": "Q",
}
VIDEO_SUFFIXES = ("mp4", "mkv")


class VCGBench:
    kind = "vcgbench"

    def _files(self, root: Path) -> dict[str, Path]:
        folder = root / "Benchmarking_QA"
        files = {t: folder / f"{t}.json" for t in TASKS if (folder / f"{t}.json").is_file()}
        if not files:
            raise DataError(
                f"{root}: no Benchmarking_QA/{{generic_qa,temporal_qa,consistency_qa}}.json; a "
                "VCGBench folder holds Benchmarking_QA/ and Test_Videos/"
            )
        return files

    def task_names(self, root: Path) -> list[str]:
        return list(self._files(root))

    def read_task(self, root: Path, name: str) -> list[Sample]:
        entries = json_list(self._files(root)[name])
        return [_sample(root, name, i, entry, TASKS[name]) for i, entry in enumerate(entries)]


def _sample(root: Path, task: str, i: int, entry: object, question: str) -> Sample:
    problem = lacking(entry, (question, "A", "video_name"))
    if problem:
        return broken(task, i, problem)
    return Sample(
        id=sample_id(task, i),
        task=task,
        video=first_existing(root / "Test_Videos", text(entry["video_name"]), VIDEO_SUFFIXES),
        question=text(entry[question]),
        candidates=(),
        answer=text(entry["A"]),
        style="plain",
    )


VCGBENCH = VCGBench()
