"""TokenLayout: named groups of positions in the merged (text + video) input sequence.

Groups follow the paper's vocabulary: system, video (frame_0..frame_{T-1}, each token with its
(t, h, w)), query (the whole "Question: … Options: …" block), question (without options),
options (option_A…, with true_option / false_options as views), prompt_tail, last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flowtrace.errors import FlowtraceError


@dataclass(frozen=True)
class TokenLayout:
    seq_len: int
    groups: Mapping[str, np.ndarray]  # name -> sorted int64 positions
    video_grid: tuple[int, int, int]  # (T, H, W) of the video tokens, frame-major then row-major
    option_letters: tuple[str, ...]
    true_letter: str

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.groups[name]
        except KeyError:
            raise FlowtraceError(
                f"unknown token group '{name}'; this layout has: {', '.join(self.groups)}"
            ) from None

    @property
    def num_frames(self) -> int:
        return self.video_grid[0]

    def video_positions(self) -> np.ndarray:
        """Positions of the video tokens as a (T, H, W) array."""
        return self.groups["video"].reshape(self.video_grid)


def build_layout(
    text_token_spans: Sequence[tuple[int, int]],
    spans: Mapping[str, tuple[int, int]],
    placeholder_token: int,
    video_grid: tuple[int, int, int],
    option_letters: Sequence[str],
    true_letter: str,
) -> TokenLayout:
    """Map character spans onto merged-sequence positions.

    `text_token_spans` are the tokenizer's offsets for the prompt *before* the single video
    placeholder token (index `placeholder_token`) is expanded into T·H·W video tokens; special
    tokens carry (0, 0) and belong to no text span.
    """
    n_video = int(np.prod(video_grid))
    shift = n_video - 1

    def merged(index: int) -> int:
        return index if index < placeholder_token else index + shift

    seq_len = len(text_token_spans) + shift
    groups: dict[str, np.ndarray] = {}
    video = np.arange(placeholder_token, placeholder_token + n_video, dtype=np.int64)
    groups["system"] = np.arange(0, placeholder_token, dtype=np.int64)
    groups["video"] = video
    per_frame = video.reshape(video_grid[0], -1)
    for t, positions in enumerate(per_frame):
        groups[f"frame_{t}"] = positions
    for name, (a, b) in spans.items():
        if name in ("system", "video"):
            continue
        hits = [
            merged(i)
            for i, (start, end) in enumerate(text_token_spans)
            if end > start and start < b and end > a and i != placeholder_token
        ]
        if not hits:
            raise FlowtraceError(f"prompt part '{name}' maps to no token (span {a}:{b})")
        groups[name] = np.asarray(hits, dtype=np.int64)
    last = seq_len - 1
    tail = groups["prompt_tail"]
    if tail[-1] != last:
        raise FlowtraceError("the prompt does not end with its answer prefix; cannot find `last`")
    groups["prompt_tail"] = tail[tail != last]
    groups["last"] = np.asarray([last], dtype=np.int64)
    option_groups = [groups[f"option_{letter}"] for letter in option_letters]
    groups["options"] = np.concatenate(option_groups)
    groups["true_option"] = groups[f"option_{true_letter}"]
    groups["false_options"] = np.concatenate(
        [groups[f"option_{x}"] for x in option_letters if x != true_letter]
    )
    return TokenLayout(
        seq_len=seq_len,
        groups=groups,
        video_grid=video_grid,
        option_letters=tuple(option_letters),
        true_letter=true_letter,
    )
