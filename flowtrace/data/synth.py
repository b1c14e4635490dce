"""Seeded synthetic video QA in TVBench layout, with real mp4 files.

Three tasks need several frames (Moving Direction, Event Order, Object Count); Object Color is a
single-frame control. Events are placed on the frames that 8-frame uniform sampling reads, so the
answer is visible to a model that sees those 8 frames.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowtrace.data.video import segment_indices
from flowtrace.errors import DataError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 80, 240),
    "yellow": (240, 220, 20),
    "white": (240, 240, 240),
    "purple": (170, 40, 220),
}
SHAPES = ("square", "circle", "triangle")
BACKGROUND = (16, 16, 16)
NUMBERS = ("one", "two", "three", "four")
SAMPLED = 8  # frames a model reads; events sit on these frames


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # (F, H, W, 3) uint8
    question: str
    candidates: list[str]  # in the task's fixed order; never depends on the answer
    answer: str


def _canvas(num_frames: int, size: int) -> np.ndarray:
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    return frames


def _draw(frame: np.ndarray, shape: str, color: str, cy: float, cx: float, r: float) -> None:
    size = frame.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    if shape == "square":
        inside = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    elif shape == "circle":
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:  # triangle pointing up
        inside = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2 + 0.5)
    frame[inside] = COLORS[color]


def _sampled(num_frames: int) -> list[int]:
    return segment_indices(num_frames - 1, SAMPLED).tolist()


def moving_direction(rng: np.random.Generator, num_frames: int, size: int) -> Clip:
    direction = str(rng.choice(["left", "right", "up", "down"]))
    color = str(rng.choice(list(COLORS)))
    r = size / 10
    travel = size * 0.55
    across = rng.uniform(r + 2, size - r - 3)
    start = rng.uniform(r + 2, size - r - 3 - travel)
    frames = _canvas(num_frames, size)
    for f in range(num_frames):
        along = start + travel * f / (num_frames - 1)
        if direction in ("left", "up"):
            along = size - 1 - along
        cy, cx = (across, along) if direction in ("left", "right") else (along, across)
        _draw(frames[f], "square", color, cy, cx, r)
    candidates = ["left", "right", "up", "down"]
    return Clip(frames, f"Which direction is the {color} square moving?", candidates, direction)


def event_order(rng: np.random.Generator, num_frames: int, size: int) -> Clip:
    colors = rng.choice(list(COLORS), size=2, replace=False)
    shapes = rng.choice(SHAPES, size=2, replace=True)
    sampled = _sampled(num_frames)
    first_at = int(rng.integers(0, 4))
    second_at = int(rng.integers(first_at + 2, SAMPLED))
    appear = [sampled[first_at], sampled[second_at]]
    r = size / 9
    first_side = str(rng.choice(["left", "right"]))
    xs = [size * 0.27, size * 0.73] if first_side == "left" else [size * 0.73, size * 0.27]
    ys = rng.uniform(r + 2, size - r - 3, size=2)
    frames = _canvas(num_frames, size)
    for f in range(num_frames):
        for color, shape, start, x, y in zip(colors, shapes, appear, xs, ys, strict=True):
            if f >= start:
                _draw(frames[f], str(shape), str(color), y, x, r)
    question = "Which object appears first, the one on the left or the one on the right?"
    return Clip(frames, question, ["left", "right"], first_side)


def object_count(rng: np.random.Generator, num_frames: int, size: int) -> Clip:
    count = int(rng.integers(1, 5))
    sampled = _sampled(num_frames)
    flashes = sorted(rng.choice(SAMPLED, size=count, replace=False).tolist())
    r = size / 10
    frames = _canvas(num_frames, size)
    for slot in flashes:
        color = str(rng.choice(list(COLORS)))
        shape = str(rng.choice(SHAPES))
        cy, cx = rng.uniform(r + 2, size - r - 3, size=2)
        # Visible on the sampled frame only: counting needs every sampled frame.
        _draw(frames[sampled[slot]], shape, color, cy, cx, r)
    return Clip(frames, "How many objects appear in the video?", list(NUMBERS), NUMBERS[count - 1])


def object_color(rng: np.random.Generator, num_frames: int, size: int) -> Clip:
    colors = list(COLORS)[:4]
    answer = str(rng.choice(colors))
    shape = str(rng.choice(SHAPES))
    r = size / 7
    cy, cx = rng.uniform(r + 2, size - r - 3, size=2)
    frames = _canvas(num_frames, size)
    for f in range(num_frames):
        _draw(frames[f], shape, answer, cy, cx, r)
    return Clip(frames, f"What color is the {shape}?", colors, answer)


TASKS: dict[str, Callable[[np.random.Generator, int, int], Clip]] = {
    "Moving Direction": moving_direction,
    "Event Order": event_order,
    "Object Count": object_count,
    "Object Color": object_color,
}


def slug(task: str) -> str:
    return task.lower().replace(" ", "_")


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # Near-lossless and no B-frames: flat synthetic colours survive and decode frame-exact.
        stream.options = {"crf": "8", "preset": "veryfast", "bf": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_clip(
    task: str, seed: int, index: int, num_frames: int = 16, size: int = 64, shuffle: bool = True
) -> Clip:
    """Sample `index` of `task` under `seed`; a task's samples do not depend on other tasks'."""
    rng = np.random.default_rng([seed, list(TASKS).index(task), index])
    clip = TASKS[task](rng, num_frames, size)
    order = rng.permutation(len(clip.candidates))
    if not shuffle:
        return clip
    return Clip(clip.frames, clip.question, [clip.candidates[j] for j in order], clip.answer)


def generate(
    out_dir: Path,
    n_per_task: int,
    seed: int,
    tasks: list[str] | None = None,
    num_frames: int = 16,
    size: int = 64,
    fps: int = 8,
    shuffle: bool = True,
) -> Path:
    """Write out_dir/json/<task>.json and out_dir/video/<task>/*.mp4; same seed, same data.

    `shuffle` puts the candidates in random order (the correct letter uniform over positions);
    without it each task lists its candidates in one fixed order, as the toy model is trained.
    """
    out_dir = Path(out_dir)
    chosen = tasks or list(TASKS)
    unknown = [t for t in chosen if t not in TASKS]
    if unknown:
        raise DataError(f"unknown synthetic task(s) {unknown}; choose from {list(TASKS)}")
    for task in TASKS:
        if task not in chosen:
            continue
        entries = []
        for i in range(n_per_task):
            clip = make_clip(task, seed, i, num_frames=num_frames, size=size, shuffle=shuffle)
            name = f"{slug(task)}_{i:04d}.mp4"
            write_mp4(out_dir / "video" / slug(task) / name, clip.frames, fps)
            entries.append(
                {
                    "video": name,
                    "question": clip.question,
                    "candidates": clip.candidates,
                    "answer": clip.answer,
                }
            )
        (out_dir / "json").mkdir(parents=True, exist_ok=True)
        (out_dir / "json" / f"{slug(task)}.json").write_text(json.dumps(entries, indent=1) + "\n")
    (out_dir / "README.md").write_text(
        f"Synthetic video QA made by `flowtrace data synth` (seed {seed}, {n_per_task} per task, "
        f"{num_frames} frames of {size}×{size} at {fps} fps).\nTasks: {', '.join(chosen)}.\n"
    )
    return out_dir
