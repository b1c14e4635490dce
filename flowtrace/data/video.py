"""Frames from videos, with the reference code's uniform segment sampling, decoded by decord."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from flowtrace.data.sample import SampleError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


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


def read_frames(path: Path, n: int, bound: tuple[float, float] | None = None) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB frames of a video file or of a folder of images (1 fps)."""
    if n < 1:
        raise ValueError(f"cannot sample {n} frames; need at least 1")
    path = Path(path)
    if not path.exists():
        raise SampleError(f"video not found: {path} — check the dataset root given with --data")
    if path.is_dir():
        return _read_folder(path, n, bound)
    from decord import DECORDError, VideoReader, cpu

    try:
        # num_threads=2 as the reference code: more threads break some .webm files in decord.
        reader = VideoReader(str(path), ctx=cpu(0), num_threads=2)
        fps = float(reader.get_avg_fps())
        indices = segment_indices(len(reader) - 1, n, fps=fps, bound=bound)
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except SampleError as err:
        raise SampleError(f"{path}: {err}") from None
    except (DECORDError, RuntimeError) as err:
        # decord's messages carry a long C++ stack trace; its first line says what went wrong.
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        raise SampleError(f"cannot decode video {path}: {first}") from None
    return np.ascontiguousarray(frames, dtype=np.uint8)


def _read_folder(folder: Path, n: int, bound: tuple[float, float] | None) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pillow is a dependency, but a bare install may lack it
        raise SampleError(f"frame folder {folder} needs pillow to be read") from None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SampleError(f"frame folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    try:
        indices = segment_indices(len(files) - 1, n, fps=1.0, bound=bound)
    except SampleError as err:
        raise SampleError(f"{folder}: {err}") from None
    frames = []
    for i in indices:
        try:
            with Image.open(files[i]) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except OSError as err:
            raise SampleError(f"cannot read frame {files[i]}: {err}") from None
    if len({f.shape for f in frames}) > 1:
        raise SampleError(f"frame folder {folder} holds images of different sizes")
    return np.stack(frames)
