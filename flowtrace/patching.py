"""Counterfactual videos for patching: the sample's frames reversed, shuffled, or with one frame
from another video, each with what a reader needs to reproduce it (the order of the frames, the
swapped frame, the donor video) and whether it equals the clean video (a static clip reversed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowtrace.program import Trace

COUNTERFACTUALS = ("reversed", "shuffled", "frame_swapped")


@dataclass(frozen=True)
class Counterfactual:
    name: str
    frames: np.ndarray  # (T, H, W, 3)
    order: np.ndarray  # (T,) which clean frame each frame is (-1: the donor's)
    swapped_frame: int  # the frame taken from the donor (-1: none)
    donor: str  # the donor sample's id and video file name ("": none)
    same_as_clean: bool  # its frames equal the clean ones: nothing to measure, no flip counted


def counterfactual(t: Trace, name: str) -> Counterfactual:
    """The counterfactual `name` of the sample's video; seeded by the run's seed and the sample
    alone, so every run draws the same (the donor comes from all of the data: `Trace.donors`)."""
    frames = t.frames
    count = len(frames)
    identity = np.arange(count)
    swapped, donor_name = -1, ""
    if name == "reversed":
        order = identity[::-1].copy()
        out = frames[order]
    elif name == "shuffled":
        rng = t.rng("shuffled")
        order = identity
        while count > 1 and (order == identity).all():
            order = rng.permutation(count)
        out = frames[order]
    elif name == "frame_swapped":
        swapped = int(t.rng("frame_swapped").integers(count))
        donor = t.donors(1)[0]
        out = frames.copy()
        out[swapped] = t.frames_of(donor)[swapped]
        order = identity.copy()
        order[swapped] = -1
        donor_name = f"{donor.id} ({Path(donor.video).name})"
    else:
        raise ValueError(f"counterfactual {name!r}: choose one of {', '.join(COUNTERFACTUALS)}")
    return Counterfactual(
        name, np.ascontiguousarray(out), order, swapped, donor_name, np.array_equal(out, frames)
    )
