"""Frames from videos, with the reference code's uniform segment sampling, decoded by decord."""

from __future__ import annotations

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
    """Midpoints of `n` equal segments over [start, end] (MVBench/TVBench `get_index`)."""
    start, end = bound if bound else (-100000, 100000)
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    if bound and (start_idx > max_frame or end_idx < start_idx):
        raise SampleError(
            f"bound {bound[0]}–{bound[1]} s lies outside the video (0–{max_frame / fps:.2f} s)"
        )
    seg_size = float(end_idx - start_idx) / n
    return np.array([int(start_idx + seg_size / 2 + np.round(seg_size * i)) for i in range(n)])


def read_frames(path: Path, n: int, bound: tuple[float, float] | None = None) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB frames of a video file or a folder of images."""
    path = Path(path)
    if not path.exists():
        raise SampleError(f"video not found: {path} — check the dataset root given with --data")
    if path.is_dir():
        return _read_folder(path, n, bound)
    from decord import DECORDError, VideoReader, cpu

    try:
        # num_threads > 2 breaks some .webm files in decord (reference code's note).
        reader = VideoReader(str(path), ctx=cpu(0), num_threads=2)
        indices = segment_indices(len(reader) - 1, n, fps=float(reader.get_avg_fps()), bound=bound)
        return reader.get_batch(indices.tolist()).asnumpy()
    except (DECORDError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SampleError(f"cannot decode video {path}: {first}") from None


def _read_folder(folder: Path, n: int, bound: tuple[float, float] | None) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SampleError(f"frame folder {folder} holds no images")
    indices = segment_indices(len(files) - 1, n, fps=1.0, bound=bound)
    return np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in indices])
