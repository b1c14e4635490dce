"""Thumbnails of the frames a store's samples saw, decoded from their videos (decord)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from flowtrace.embedded import EMBEDDED

# Stores keep absolute video paths; the embedded toy data moves with the checkout, so a path
# into another checkout's copy is looked up in this one.
_EMBEDDED = "/flowtrace/toy/embedded/"


def resolve_video(path: str) -> Path | None:
    """The video at `path`, or the embedded toy's copy of it here; None when neither exists."""
    found = Path(path)
    if found.exists():
        return found
    if _EMBEDDED in path:
        here = EMBEDDED / path.split(_EMBEDDED, 1)[1]
        if here.exists():
            return here
    return None


def encode(frame: np.ndarray, size: int) -> str:
    """A data URI of `frame` shrunk to `size` px on its long side: PNG or JPEG, the smaller."""
    from PIL import Image

    image = Image.fromarray(frame)
    image.thumbnail((size, size))
    best = ""
    for fmt, mime, options in (("PNG", "png", {}), ("JPEG", "jpeg", {"quality": 75})):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        uri = f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode()
        if not best or len(uri) < len(best):
            best = uri
    return best


def thumbnails(videos: dict[str, int], size: int = 64) -> tuple[list[dict], list[str]]:
    """Rows {key, url} for the first frames of every video (`browser.frame_key`), and the
    videos that could not be read.

    Frames are sampled as `flowtrace.data.read_frames` samples them by default (uniformly
    over the whole video)."""
    from flowtrace.data import read_frames
    from flowtrace.errors import FlowtraceError
    from flowtrace.report.browser import frame_key

    rows, missing = [], []
    for video, count in videos.items():
        path = resolve_video(video)
        try:
            if path is None:
                raise FileNotFoundError(video)
            pixels = read_frames(path, count)
        except (FlowtraceError, OSError, RuntimeError, ValueError):
            missing.append(video)
            continue
        rows += [{"key": frame_key(video, t), "url": encode(pixels[t], size)} for t in range(count)]
    return rows, missing
