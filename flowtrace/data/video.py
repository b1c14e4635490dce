"""Frames from videos, GIFs and frame folders, with the reference code's frame choice.

Videos are decoded by decord. decord cannot read GIFs ("broken metadata"), so GIFs and frame
folders are read with Pillow.

Frames are chosen by the dataset's rule (the MVBench/TVBench segment midpoints, LongVideoBench's
stride) unless the model's adapter picks them itself (`FramePicker`: VideoLLaMA3's loader reads
evenly spaced frames, both ends included, whatever the benchmark). Either way the frames come
back as `VideoFrames`, which carry each frame's index and time for prompts that state times.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np

from flowtrace.data.sample import FrameRule, Sample, SampleError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# The reference's read_gif assumes 25 fps whatever the GIF's own timing says.
GIF_FPS = 25.0
# Bounds shorter than this are cut by frame arithmetic, longer ones by time, in the loader whose
# frames a picking adapter follows (VideoLLaMA3's: its decoder needs a second to trim by time).
SHORT_SPAN = 1.0
# Slack when comparing frame times with a bound: decoders round timestamps to their time base.
_TIME_SLACK = 1e-6


class VideoFrames(np.ndarray):
    """(n, H, W, 3) uint8 RGB frames that remember which frames of the video they are.

    `indices`: each frame's number in the video; `times`: each frame's time in seconds as its
    sampler stamps it (the decoder's timestamps, or an adapter's loader's rule; see
    `read_frames`). Both survive copies and in-place edits; None where unknown.
    """

    indices: np.ndarray | None
    times: np.ndarray | None

    def __new__(
        cls, frames: np.ndarray, indices: np.ndarray | None = None, times: np.ndarray | None = None
    ) -> VideoFrames:
        out = np.ascontiguousarray(frames, dtype=np.uint8).view(cls)
        out.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        out.times = None if times is None else np.asarray(times, dtype=np.float64)
        return out

    def __array_finalize__(self, obj: object) -> None:
        # Called for views and copies: keep what the parent knew.
        self.indices = getattr(obj, "indices", None)
        self.times = getattr(obj, "times", None)

    def __reduce__(self) -> tuple:
        # Pickled (worker processes) with the attributes, which ndarray's own pickling drops.
        constructor, args, state = super().__reduce__()  # type: ignore[misc]
        return constructor, args, (state, self.indices, self.times)

    def __setstate__(self, state: tuple) -> None:
        base, self.indices, self.times = state
        super().__setstate__(base)


class FramePicker(Protocol):
    """An adapter that chooses its model's frames itself (flowtrace.models.base.Adapter)."""

    def frame_indices(self, count: int, n: int) -> np.ndarray | None:
        """Positions 0..count-1 to read among the `count` frames of the video or of its bound,
        for `n` frames; None: the dataset's own rule."""


def segment_indices(
    max_frame: int,
    n: int,
    fps: float = 1.0,
    bound: tuple[float, float] | None = None,
    first_idx: int = 0,
) -> np.ndarray:
    """Midpoints of `n` equal segments of frames [start, end] (MVBench/TVBench `get_index`).

    `max_frame` is the last frame's index (frame count - 1). The arithmetic, Python's `round` and
    `np.round` (both round half to even) included, is the reference code's, so the same frames are
    read as in the paper.
    """
    if n < 1:
        raise ValueError(f"cannot sample {n} frames; need at least 1")
    if max_frame < 0:
        raise SampleError("the video has no frames")
    if bound:
        start, end = bound
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise SampleError(f"bound {start}–{end} s is not a time span (start ≤ end)")
    else:
        start, end = -100000, 100000
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    if bound and (start_idx > max_frame or end_idx < start_idx):
        raise SampleError(
            f"bound {bound[0]}–{bound[1]} s lies outside the video (0–{max_frame / fps:.2f} s)"
        )
    seg_size = float(end_idx - start_idx) / n
    return np.array([int(start_idx + seg_size / 2 + np.round(seg_size * i)) for i in range(n)])


def stride_indices(duration: float, fps: float, n: int, max_frame: int) -> np.ndarray:
    """LongVideoBench's loader: min(n, ⌊duration⌋) frames a fixed stride apart from frame 0,
    the last repeated up to `n` (so videos under n seconds give fewer distinct frames)."""
    if n < 1:
        raise ValueError(f"cannot sample {n} frames; need at least 1")
    if not math.isfinite(duration) or int(duration) < 1:
        raise SampleError(f"duration {duration} s: LongVideoBench sampling needs at least 1 s")
    count = min(n, int(duration))
    step = int(int(duration * fps) / count)
    indices = [step * i for i in range(count)]
    indices += [indices[-1]] * (n - count)
    if indices[-1] > max_frame:
        raise SampleError(
            f"duration {duration} s in the annotation is longer than the video "
            f"({(max_frame + 1) / fps:.2f} s at {fps:g} fps)"
        )
    return np.array(indices)


def sample_frames(sample: Sample, n: int, picker: FramePicker | None = None) -> VideoFrames:
    """`read_frames` with the sample's own bound and frame rule; `picker` (the loaded model's
    adapter) overrides the rule where its model reads frames its own way."""
    return read_frames(sample.video, n, bound=sample.bound, rule=sample.frame_rule, picker=picker)


def picked_range(
    count: int, fps: float, bound: tuple[float, float] | None, starts: np.ndarray | None = None
) -> tuple[np.ndarray, float | None, float | None]:
    """The frames a picking adapter chooses among, and the span their times are spread over.

    The whole video, or its bound as the VideoLLaMA3 loader cuts it: by time (frames whose time
    is in [start, end), `starts` being each frame's decoder time), or, for spans under
    SHORT_SPAN seconds and for frame folders and GIFs (`starts` None), by its arithmetic
    ⌊s·fps⌋ − 1 … ⌊e·fps⌋ − 1. Returns (frame numbers, span start, span end); the span is None
    where times are index / fps.
    """
    if bound is None:
        frames = np.arange(count, dtype=np.int64)
        if starts is None:
            return frames, None, None
        # The decoder's clock: the first frame's time to the video's end.
        return frames, float(starts[0]), float(starts[0]) + _duration(starts, fps)
    start, end = bound
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise SampleError(f"bound {start}–{end} s is not a time span (start ≤ end)")
    start, end = max(start, 0.0), max(end, 0.0)
    if end == start:
        end = start + 1.0  # the loader widens an empty span to one second
    if starts is None or end - start < SHORT_SPAN:
        first = max(int(start * fps) - 1, 0)
        last = min(int(end * fps) - 1, count - 1)
        frames = np.arange(first, last + 1, dtype=np.int64)
        span: tuple[float | None, float | None] = (None, None)
    else:
        origin = max(start, float(starts[0]))
        stop = min(end, origin + _duration(starts, fps))
        inside = (starts >= origin - _TIME_SLACK) & (starts < stop - _TIME_SLACK)
        frames = np.flatnonzero(inside).astype(np.int64)
        span = (origin, stop)
    if frames.size == 0:
        raise SampleError(
            f"bound {bound[0]}–{bound[1]} s holds no frame of the video "
            f"({count} frames at {fps:g} fps)"
        )
    return frames, span[0], span[1]


def _duration(starts: np.ndarray, fps: float) -> float:
    """Seconds from the first frame's time to the end of the last frame."""
    return float(starts[-1] - starts[0]) + 1.0 / fps


def _pick(
    picker: FramePicker | None,
    n: int,
    count: int,
    fps: float,
    bound: tuple[float, float] | None,
    starts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(frame numbers, times) as `picker` chooses them, or None where it leaves the choice to
    the dataset's rule."""
    if picker is None:
        return None
    frames, origin, stop = picked_range(count, fps, bound, starts)
    positions = picker.frame_indices(len(frames), n)
    if positions is None:
        return None
    positions = np.asarray(positions, dtype=np.int64)
    if origin is None or stop is None:
        times = frames[positions] / fps
    else:
        # The loader spreads the span's seconds evenly over its frames, both ends included.
        step = (stop - origin) / (len(frames) - 1) if len(frames) > 1 else 0.0
        times = origin + positions * step
    return frames[positions], times


def read_frames(
    path: Path,
    n: int,
    bound: tuple[float, float] | None = None,
    rule: FrameRule | None = None,
    picker: FramePicker | None = None,
) -> VideoFrames:
    """(n, H, W, 3) uint8 RGB frames of a video file, a GIF or a folder of images.

    Frames follow the dataset's rule (`rule`, default: segment midpoints) with times from the
    decoder (index / fps for GIFs and folders), unless `picker` chooses them: then among
    `picked_range`'s frames, stamped as that loader stamps them.

    Raises SampleError for a missing, unreadable or corrupt video and for a bound outside it.
    """
    if n < 1:
        raise ValueError(f"cannot sample {n} frames; need at least 1")
    path = Path(path)
    rule = rule or FrameRule()
    if not path.exists():
        raise SampleError(f"video not found: {path} — check the dataset root given with --data")
    if path.is_dir():
        return _read_folder(path, n, bound, rule, picker)
    if path.suffix.lower() == ".gif":
        return _read_gif(path, n, bound, picker)
    from decord import DECORDError, VideoReader, cpu

    try:
        # num_threads=2 as the reference code: more threads break some .webm files in decord.
        reader = VideoReader(str(path), ctx=cpu(0), num_threads=2)
        fps = float(reader.get_avg_fps())
        count = len(reader)
        starts = None
        if picker is not None:
            starts = reader.get_frame_timestamp(list(range(count)))[:, 0]
        chosen = _pick(picker, n, count, fps, bound, starts)
        if chosen is not None:
            indices, times = chosen
        else:
            if rule.duration is not None:
                indices = stride_indices(rule.duration, fps, n, count - 1)
            else:
                indices = segment_indices(count - 1, n, fps=fps, bound=bound)
            times = reader.get_frame_timestamp(indices.tolist())[:, 0]
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except SampleError as err:
        raise SampleError(f"{path}: {err}") from None
    except (DECORDError, RuntimeError, IndexError) as err:
        # decord's messages carry a long C++ stack trace; its first line says what went wrong.
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        raise SampleError(f"cannot decode video {path}: {first}") from None
    return VideoFrames(frames, indices, times)


def _read_gif(
    path: Path, n: int, bound: tuple[float, float] | None, picker: FramePicker | None
) -> VideoFrames:
    from PIL import Image

    try:
        with Image.open(path) as gif:
            count = getattr(gif, "n_frames", 1)
            chosen = _pick(picker, n, count, GIF_FPS, bound)
            if chosen is not None:
                indices = chosen[0]
            else:
                indices = segment_indices(count - 1, n, fps=GIF_FPS, bound=bound)
            frames = []
            # Each chosen frame once, in order, as the reference's read_gif collects them …
            order = sorted(set(indices.tolist()))
            for i in order:
                gif.seek(i)
                frames.append(np.asarray(gif.convert("RGB")))
    except SampleError as err:
        raise SampleError(f"{path}: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise SampleError(f"cannot decode GIF {path}: {err}") from None
    # … then repeated as a whole sequence when a short GIF gave fewer than n.
    numbers = np.array([order[i % len(order)] for i in range(n)])
    stacked = np.stack([frames[i % len(frames)] for i in range(n)])
    return VideoFrames(stacked, numbers, numbers / GIF_FPS)


def _read_folder(
    folder: Path,
    n: int,
    bound: tuple[float, float] | None,
    rule: FrameRule,
    picker: FramePicker | None,
) -> VideoFrames:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SampleError(f"frame folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    first = rule.first_index
    fps = rule.fps or 1.0
    try:
        chosen = _pick(picker, n, len(files), fps, bound)
        if chosen is not None:
            # A picking loader counts files from 0 in name order.
            numbers, times = chosen[0] + first, chosen[1]
        else:
            # Frame numbers run first … first + count - 1; the i-th file in name order is frame
            # first + i (MVBench's TVQA folders: 00001.jpg is frame 1 at 3 fps).
            numbers = segment_indices(
                len(files) - 1 + first, n, fps=fps, bound=bound, first_idx=first
            )
            times = numbers / fps
    except SampleError as err:
        raise SampleError(f"{folder}: {err}") from None
    frames = []
    for i in numbers - first:
        try:
            with Image.open(files[i]) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except OSError as err:
            raise SampleError(f"cannot read frame {files[i]}: {err}") from None
    if len({f.shape for f in frames}) > 1:
        raise SampleError(f"frame folder {folder} holds images of different sizes")
    return VideoFrames(np.stack(frames), numbers, times)
