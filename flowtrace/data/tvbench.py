"""TVBench and MVBench: ROOT/json/<task>.json, each a list of entries {"video", "question",
"candidates", "answer"} with "start"/"end" seconds in the tasks the reference code bounds.

TVBench keeps each task's videos in video/<task file stem>/. MVBench keeps them in the folders of
the source datasets (video/star/Charades_v1_480/, …), listed below as the reference code does.
Any other json/<name>.json in a TVBench-layout folder (`flowtrace data synth` writes such) is a
task named after its file ("object_color" → "Object Color") with videos in video/<name>/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flowtrace.data.annotations import broken, json_list, lacking, sample_id, seconds, text
from flowtrace.data.open_ended import open_ended_sample
from flowtrace.data.sample import FrameRule, Sample
from flowtrace.errors import DataError

FIELDS = ("video", "question", "candidates", "answer")


@dataclass(frozen=True)
class Task:
    name: str
    file: str  # under json/
    videos: str  # under video/
    bounded: bool | None  # read start/end; None: where an entry has them (unlisted tasks)
    frames: bool = False  # videos are frame folders (MVBench's TVQA clips, 3 fps from 00001.jpg)


def _tvbench(name: str, bounded: bool = False) -> Task:
    stem = name.lower().replace(" ", "_")
    return Task(name, f"{stem}.json", stem, bounded)


TVBENCH_TASKS = [
    _tvbench("Action Antonym"),
    _tvbench("Action Count"),
    _tvbench("Action Localization", bounded=True),
    _tvbench("Action Sequence", bounded=True),
    _tvbench("Egocentric Sequence"),
    _tvbench("Moving Direction"),
    _tvbench("Object Count"),
    _tvbench("Object Shuffle"),
    _tvbench("Scene Transition"),
    _tvbench("Unexpected Action"),
]

_CHARADES = "star/Charades_v1_480"
_CLEVRER = "clevrer/video_validation"
_PERCEPTION = "perception/videos"
MVBENCH_TASKS = [
    Task("Action Antonym", "action_antonym.json", "ssv2_video", False),
    Task("Action Count", "action_count.json", _PERCEPTION, False),
    Task("Action Localization", "action_localization.json", "sta/sta_video", True),
    Task("Action Prediction", "action_prediction.json", _CHARADES, True),
    Task("Action Sequence", "action_sequence.json", _CHARADES, True),
    Task("Character Order", "character_order.json", _PERCEPTION, False),
    Task("Counterfactual Inference", "counterfactual_inference.json", _CLEVRER, False),
    Task("Egocentric Navigation", "egocentric_navigation.json", "vlnqa", False),
    Task("Episodic Reasoning", "episodic_reasoning.json", "tvqa/frames_fps3_hq", True, True),
    Task("Fine-grained Action", "fine_grained_action.json", "Moments_in_Time_Raw/videos", False),
    Task("Fine-grained Pose", "fine_grained_pose.json", "nturgbd", False),
    Task("Moving Attribute", "moving_attribute.json", _CLEVRER, False),
    Task("Moving Count", "moving_count.json", _CLEVRER, False),
    Task("Moving Direction", "moving_direction.json", _CLEVRER, False),
    Task("Object Existence", "object_existence.json", _CLEVRER, False),
    Task("Object Interaction", "object_interaction.json", _CHARADES, True),
    Task("Object Shuffle", "object_shuffle.json", _PERCEPTION, False),
    Task("Scene Transition", "scene_transition.json", "scene_qa/video", False),
    Task("State Change", "state_change.json", _PERCEPTION, False),
    Task("Unexpected Action", "unexpected_action.json", "FunQA_test/test", False),
]
TVQA_FRAMES = FrameRule(fps=3.0, first_index=1)


class JsonTasks:
    """Reader of a json/ + video/ folder; `extra_tasks` takes unlisted json files as tasks."""

    def __init__(self, kind: str, tasks: list[Task], extra_tasks: bool, open_ended: bool = False):
        self.kind = kind
        self.known = {t.file: t for t in tasks}
        self.extra_tasks = extra_tasks
        self.open_ended = open_ended

    def _tasks(self, root: Path) -> dict[str, Task]:
        folder = root / "json"
        if not folder.is_dir():
            raise DataError(
                f"{root}: no json/ folder with task annotation files; a {self.kind} folder "
                "holds json/<task>.json and video/ (see docs/data.md)"
            )
        tasks: dict[str, Task] = {}
        for file in sorted(folder.glob("*.json")):
            task = self.known.get(file.name)
            if task is None and self.extra_tasks:
                task = Task(file.stem.replace("_", " ").title(), file.name, file.stem, None)
            if task is None:
                continue
            if task.name in tasks:
                raise DataError(
                    f"{tasks[task.name].file} and {file.name} both name the task {task.name!r}"
                )
            tasks[task.name] = task
        if not tasks:
            raise DataError(
                f"{root / 'json'}: none of the {self.kind} task files "
                f"({', '.join(sorted(self.known))})"
            )
        return tasks

    def task_names(self, root: Path) -> list[str]:
        return list(self._tasks(root))

    def read_task(self, root: Path, name: str) -> list[Sample]:
        task = self._tasks(root)[name]
        entries = json_list(root / "json" / task.file)
        samples = [self._sample(root, task, i, entry) for i, entry in enumerate(entries)]
        if self.open_ended:
            return [s if s.problem else open_ended_sample(s) for s in samples]
        return samples

    def _sample(self, root: Path, task: Task, i: int, entry: object) -> Sample:
        problem = lacking(entry, FIELDS)
        if problem:
            return broken(task.name, i, problem)
        if not isinstance(entry["candidates"], list):
            return broken(task.name, i, "has 'candidates' that are not a list")
        bound = None
        if task.bounded or (task.bounded is None and ("start" in entry or "end" in entry)):
            bound = seconds(entry)
            if isinstance(bound, str):
                return broken(task.name, i, bound)
        return Sample(
            id=sample_id(task.name, i),
            task=task.name,
            video=root / "video" / task.videos / str(entry["video"]),
            question=text(entry["question"]),
            candidates=tuple(text(c) for c in entry["candidates"]),
            answer=text(entry["answer"]),
            bound=bound,
            frame_rule=TVQA_FRAMES if task.frames else None,
        )


TVBENCH = JsonTasks("tvbench", TVBENCH_TASKS, extra_tasks=True)
TVBENCH_OPEN = JsonTasks("tvbench-open", TVBENCH_TASKS, extra_tasks=False, open_ended=True)
MVBENCH = JsonTasks("mvbench", MVBENCH_TASKS, extra_tasks=False)
