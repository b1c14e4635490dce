"""TokenLayout: named groups of positions in the merged (text + video) input sequence.

Groups follow the paper's vocabulary: system, video (frame_0..frame_{T-1}, each token with its
(t, h, w)), query (the whole "Question: … Options: …" block), question (without options),
options (option_A…, with true_option / false_options as views), prompt_tail, last.

Tokens that a processor adds around the frames — per-frame timestamps ("<0.5 seconds>"),
delimiters (`<img>`, `</img>`, "Frame1:", `<|vision_start|>`), a trailing newline embedding — sit
inside the video region but belong to no frame: they form the group `video_markers` (present only
when there are such tokens), so `frame[<t] -> frame[t]` never cuts them and `video` stays the frame
tokens alone, in (t, h, w) order.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flowtrace.errors import FlowtraceError

MARKERS = "video_markers"
# Every plain group name a layout may hold (see assemble_layout and the prompt templates' spans),
# so that a recipe's names are checked before any model is loaded.
GROUP_NAMES = (
    "system",
    "video",
    MARKERS,
    "query",
    "question",
    "options",
    "true_option",
    "false_options",
    "prompt_tail",
    "last",
)
# Numbered members of a family (frame_0, frame_1, …) and the family itself, indexed as frame[t].
FAMILIES = ("frame",)
_MEMBER = re.compile(r"^(?:frame_\d+|option_[A-Z])$")


def is_group_name(name: str) -> bool:
    """Whether some layout can hold a group of this name (frame_7 and option_F included)."""
    return name in GROUP_NAMES or bool(_MEMBER.match(name))


def did_you_mean(name: str, family: bool = False) -> str:
    """A hint naming the closest group names, and the vocabulary."""
    known = list(FAMILIES) if family else [*GROUP_NAMES, *(f"{f}[t]" for f in FAMILIES)]
    close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    if family:
        return f"{hint}indexed families: {', '.join(f + '[t]' for f in FAMILIES)}"
    return (
        f"{hint}groups are {', '.join(GROUP_NAMES)}, frame_0, frame_1, … (or frame[t], "
        "frame[<t], frame[2]) and option_A … option_Z"
    )


@dataclass(frozen=True)
class TokenLayout:
    seq_len: int
    groups: Mapping[str, np.ndarray]  # name -> sorted int64 positions
    video_grid: tuple[int, int, int]  # (T, H, W) of the video tokens, frame-major then row-major
    option_letters: tuple[str, ...]
    true_letter: str
    # (H, W) of each frame; all equal to video_grid[1:] unless a model varies tokens per frame.
    frame_grids: tuple[tuple[int, int], ...] | None = None

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

    @property
    def grids(self) -> tuple[tuple[int, int], ...]:
        """(H, W) per frame."""
        if self.frame_grids is not None:
            return self.frame_grids
        return tuple((self.video_grid[1], self.video_grid[2]) for _ in range(self.num_frames))

    def video_positions(self) -> np.ndarray:
        """Positions of the video tokens as a (T, H, W) array (frames must share one grid)."""
        if len(set(self.grids)) > 1:
            raise FlowtraceError(
                f"frames have different token grids {sorted(set(self.grids))}; read them one "
                "frame at a time with frame_positions(t)"
            )
        return self.groups["video"].reshape(self.video_grid)

    def frame_positions(self, t: int) -> np.ndarray:
        """Positions of frame t's tokens as an (H, W) array."""
        return self.groups[f"frame_{t}"].reshape(self.grids[t])


def build_layout(
    text_token_spans: Sequence[tuple[int, int]],
    spans: Mapping[str, tuple[int, int]],
    placeholder_token: int,
    video_grid: tuple[int, int, int],
    option_letters: Sequence[str],
    true_letter: str,
) -> TokenLayout:
    """Layout for a prompt whose one placeholder token expands into T·H·W contiguous video tokens.

    `text_token_spans` are the tokenizer's offsets for the prompt *before* the placeholder token
    (index `placeholder_token`) is expanded; special tokens carry (0, 0) and belong to no span.
    """
    n_video = int(np.prod(video_grid))
    shift = n_video - 1
    n_text = len(text_token_spans)
    # Text token i sits at merged position i before the placeholder and i + shift after it.
    text_positions = [i if i < placeholder_token else i + shift for i in range(n_text)]
    text_positions[placeholder_token] = -1
    video = np.arange(placeholder_token, placeholder_token + n_video, dtype=np.int64)
    frames = list(video.reshape(video_grid[0], -1))
    return assemble_layout(
        seq_len=n_text + shift,
        text_token_spans=text_token_spans,
        text_positions=text_positions,
        spans=spans,
        frames=frames,
        frame_grids=[(video_grid[1], video_grid[2])] * video_grid[0],
        video_region=(placeholder_token, placeholder_token + n_video),
        option_letters=option_letters,
        true_letter=true_letter,
    )


def layout_from_ids(
    text_ids: Sequence[int],
    text_token_spans: Sequence[tuple[int, int]],
    merged_ids: Sequence[int],
    spans: Mapping[str, tuple[int, int]],
    frames: Sequence[np.ndarray],
    frame_grids: Sequence[tuple[int, int]],
    option_letters: Sequence[str],
    true_letter: str,
) -> TokenLayout:
    """Layout for any processor that expands the prompt's video part into more tokens.

    `text_ids`/`text_token_spans` are the tokenizer's ids and offsets for the prompt as written
    (video placeholder unexpanded); `merged_ids` are the ids the processor produced; `frames` are
    the merged positions of each frame's tokens (row-major in the frame), `frame_grids` their
    (H, W). Text outside the video span must tokenize the same way in both, which the common
    prefix and suffix of the two id lists establish — no string search on decoded text.
    """
    n_text, n_merged = len(text_ids), len(merged_ids)
    prefix = 0
    while prefix < min(n_text, n_merged) and text_ids[prefix] == merged_ids[prefix]:
        prefix += 1
    suffix = 0
    limit = min(n_text - prefix, n_merged - prefix)
    while suffix < limit and text_ids[n_text - 1 - suffix] == merged_ids[n_merged - 1 - suffix]:
        suffix += 1
    shift = n_merged - n_text
    text_positions = [
        i if i < prefix else (i + shift if i >= n_text - suffix else -1) for i in range(n_text)
    ]
    a, b = spans["video"]
    inside = [
        i
        for i, (start, end) in enumerate(text_token_spans)
        if end > start and start < b and end > a
    ]
    if not inside:
        raise FlowtraceError("the prompt's video part maps to no token")
    first, last = inside[0], inside[-1]
    # The video region runs from the first to the last token that the video text produced, and
    # covers whatever the processor inserted between prefix and suffix.
    start = min(p for p in (text_positions[first], prefix) if p >= 0)
    stop = max(text_positions[last] + 1 if text_positions[last] >= 0 else 0, n_merged - suffix)
    frame_min = min(int(f.min()) for f in frames)
    frame_max = max(int(f.max()) for f in frames)
    start, stop = min(start, frame_min), max(stop, frame_max + 1)
    return assemble_layout(
        seq_len=n_merged,
        text_token_spans=text_token_spans,
        text_positions=text_positions,
        spans=spans,
        frames=frames,
        frame_grids=frame_grids,
        video_region=(start, stop),
        option_letters=option_letters,
        true_letter=true_letter,
    )


def assemble_layout(
    seq_len: int,
    text_token_spans: Sequence[tuple[int, int]],
    text_positions: Sequence[int],
    spans: Mapping[str, tuple[int, int]],
    frames: Sequence[np.ndarray],
    frame_grids: Sequence[tuple[int, int]],
    video_region: tuple[int, int],
    option_letters: Sequence[str],
    true_letter: str,
) -> TokenLayout:
    """Groups from text positions (−1: not in the merged sequence as such) and frame positions."""
    if len(frames) != len(frame_grids):
        raise FlowtraceError(f"{len(frames)} frames but {len(frame_grids)} frame grids")
    start, stop = video_region
    groups: dict[str, np.ndarray] = {"system": np.arange(0, start, dtype=np.int64)}
    frame_arrays = [np.asarray(f, dtype=np.int64) for f in frames]
    for t, (positions, (h, w)) in enumerate(zip(frame_arrays, frame_grids, strict=True)):
        if positions.size != h * w:
            raise FlowtraceError(f"frame {t} has {positions.size} tokens, its grid {h}×{w}")
        if positions.min() < start or positions.max() >= stop:
            raise FlowtraceError(f"frame {t}'s tokens lie outside the video part of the prompt")
        groups[f"frame_{t}"] = positions
    video = np.concatenate(frame_arrays) if frame_arrays else np.zeros(0, dtype=np.int64)
    groups["video"] = video
    markers = np.setdiff1d(np.arange(start, stop, dtype=np.int64), video)
    if markers.size:
        groups[MARKERS] = markers
    for name, (a, b) in spans.items():
        if name in ("system", "video"):
            continue
        touched = [i for i, (s, e) in enumerate(text_token_spans) if e > s and s < b and e > a]
        hits = [text_positions[i] for i in touched]
        if any(p < 0 for p in hits):
            raise FlowtraceError(
                f"prompt part '{name}' is tokenized differently once the processor expands the "
                "video; put a separator between the video placeholder and the text"
            )
        if not hits:
            raise FlowtraceError(f"prompt part '{name}' maps to no token (span {a}:{b})")
        positions = np.asarray(hits, dtype=np.int64)
        if ((positions >= start) & (positions < stop)).any():
            raise FlowtraceError(f"prompt part '{name}' overlaps the video tokens")
        groups[name] = positions
    last = seq_len - 1
    tail = groups["prompt_tail"]
    if tail[-1] != last:
        raise FlowtraceError("the prompt does not end with its answer prefix; cannot find `last`")
    groups["prompt_tail"] = tail[tail != last]
    groups["last"] = np.asarray([last], dtype=np.int64)
    if option_letters:  # open-ended prompts show no options: no option groups
        option_groups = [groups[f"option_{letter}"] for letter in option_letters]
        groups["options"] = np.concatenate(option_groups)
        groups["true_option"] = groups[f"option_{true_letter}"]
        groups["false_options"] = np.concatenate(
            [groups[f"option_{x}"] for x in option_letters if x != true_letter]
        )
    grids = tuple((int(h), int(w)) for h, w in frame_grids)
    first = grids[0] if grids else (0, 0)
    return TokenLayout(
        seq_len=seq_len,
        groups=groups,
        video_grid=(len(grids), first[0], first[1]),
        option_letters=tuple(option_letters),
        true_letter=true_letter,
        frame_grids=grids,
    )
