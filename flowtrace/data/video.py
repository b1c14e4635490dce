"""Frames from videos, GIFs and frame folders, with the reference code's frame choice.

Videos are decoded by decord. decord cannot read GIFs ("broken metadata"), so GIFs and frame
folders are read with Pillow.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from flowtrace.data.sample import FrameRule, Sample, SampleError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# The reference's read_gif assumes 25 fps whatever the GIF's own timing says.
GIF_FPS = 25.0


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


def sample_frames(sample: Sample, n: int) -> np.ndarray:
    """`read_frames` with the sample's own bound and frame rule."""
    return read_frames(sample.video, n, bound=sample.bound, rule=sample.frame_rule)


def read_frames(
    path: Path, n: int, bound: tuple[float, float] | None = None, rule: FrameRule | None = None
) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB frames of a video file, a GIF or a folder of images.

    Raises SampleError for a missing, unreadable or corrupt video and for a bound outside it.
    """
    if n < 1:
        raise ValueError(f"cannot sample {n} frames; need at least 1")
    path = Path(path)
    rule = rule or FrameRule()
    if not path.exists():
        raise SampleError(f"video not found: {path} — check the dataset root given with --data")
    if path.is_dir():
        return _read_folder(path, n, bound, rule)
    if path.suffix.lower() == ".gif":
        return _read_gif(path, n, bound)
    from decord import DECORDError, VideoReader, cpu

    try:
        # num_threads=2 as the reference code: more threads break some .webm files in decord.
        reader = VideoReader(str(path), ctx=cpu(0), num_threads=2)
        fps = float(reader.get_avg_fps())
        if rule.duration is not None:
            indices = stride_indices(rule.duration, fps, n, len(reader) - 1)
        else:
            indices = segment_indices(len(reader) - 1, n, fps=fps, bound=bound)
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except SampleError as err:
        raise SampleError(f"{path}: {err}") from None
    except (DECORDError, RuntimeError, IndexError) as err:
        # decord's messages carry a long C++ stack trace; its first line says what went wrong.
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        raise SampleError(f"cannot decode video {path}: {first}") from None
    return np.ascontiguousarray(frames, dtype=np.uint8)


def _read_gif(path: Path, n: int, bound: tuple[float, float] | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as gif:
            count = getattr(gif, "n_frames", 1)
            indices = segment_indices(count - 1, n, fps=GIF_FPS, bound=bound)
            frames = []
            # Each chosen frame once, in order, as the reference's read_gif collects them …
            for i in sorted(set(indices.tolist())):
                gif.seek(i)
                frames.append(np.asarray(gif.convert("RGB")))
    except SampleError as err:
        raise SampleError(f"{path}: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise SampleError(f"cannot decode GIF {path}: {err}") from None
    # … then repeated as a whole sequence when a short GIF gave fewer than n.
    return np.stack([frames[i % len(frames)] for i in range(n)])


def _read_folder(
    folder: Path, n: int, bound: tuple[float, float] | None, rule: FrameRule
) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SampleError(f"frame folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    first = rule.first_index
    try:
        # Frame numbers run first … first + count - 1; the i-th file in name order is frame
        # first + i (MVBench's TVQA folders: 00001.jpg is frame 1 at 3 fps).
        numbers = segment_indices(
            len(files) - 1 + first, n, fps=rule.fps or 1.0, bound=bound, first_idx=first
        )
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
    return np.stack(frames)
