"""Shared input building: the placeholder-expanding processor and the prompt's TokenLayout."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from flowtrace.data import Sample
from flowtrace.errors import FlowtraceError
from flowtrace.models.prompt_template import RenderedPrompt
from flowtrace.tokens.layout import MARKERS, TokenLayout, layout_from_ids


class FramesProcessor:
    """Tokenizer + per-frame image processor for checkpoints without a transformers processor.

    The prompt holds one `video_token`; it is expanded into `tokens_for(frames)` copies, which the
    model overwrites with the video features (PLLaVA, InternVL chat). Frames go through
    `prepare_frames` (a model's own resizing) and then the image processor, one video per call.
    """

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any,
        video_token: str,
        tokens_for: Callable[[int], int],
        prepare_frames: Callable[[np.ndarray], list[np.ndarray]] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.video_token = video_token
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token)
        if self.video_token_id is None or self.video_token_id == tokenizer.unk_token_id:
            raise FlowtraceError(
                f"the tokenizer has no {video_token!r} token; the checkpoint's tokenizer files "
                "must be the ones the model was trained with"
            )
        self.tokens_for = tokens_for
        self.prepare_frames = prepare_frames or (lambda frames: list(frames))

    def __call__(
        self, text: str, videos: Sequence[np.ndarray], return_tensors: str = "pt", **_: Any
    ) -> BatchFeature:
        if len(videos) != 1:
            raise FlowtraceError("one video per prompt")
        ids = self.tokenizer(text)["input_ids"]
        where = [i for i, t in enumerate(ids) if t == self.video_token_id]
        if len(where) != 1:
            raise FlowtraceError(
                f"the prompt must hold exactly one {self.video_token} token, found {len(where)}"
            )
        p = where[0]
        count = self.tokens_for(len(videos[0]))
        ids = ids[:p] + [self.video_token_id] * count + ids[p + 1 :]
        pixels = self.image_processor(self.prepare_frames(videos[0]), return_tensors="pt")
        return BatchFeature(
            {
                "input_ids": torch.tensor([ids]),
                "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                "pixel_values_videos": pixels["pixel_values"].unsqueeze(0),
            }
        )

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)


def placeholder_frames(
    ids: torch.Tensor, token_id: int, grid: tuple[int, int, int], trailing: int = 0
) -> list[np.ndarray]:
    """Positions of each frame's tokens among the `token_id` placeholders, frame-major.

    `trailing` placeholders after the frames hold no frame (LLaVA-OneVision's newline embedding).
    """
    positions = (ids == token_id).nonzero()[:, -1].cpu().numpy()
    frames, height, width = grid
    want = frames * height * width + trailing
    if positions.size != want:
        raise FlowtraceError(
            f"processor gave {positions.size} video tokens; the model's config expects "
            f"{frames}×{height}×{width}" + (f" + {trailing}" if trailing else "")
        )
    return list(positions[: frames * height * width].reshape(frames, height * width))


def prompt_layout(
    tokenizer: Any,
    prompt: RenderedPrompt,
    merged_ids: torch.Tensor,
    frames: Sequence[np.ndarray],
    frame_grids: Sequence[tuple[int, int]],
    sample: Sample,
) -> TokenLayout:
    """TokenLayout of a processed prompt: text spans through the tokenizer's offsets."""
    text = tokenizer(prompt.text, return_offsets_mapping=True)
    return layout_from_ids(
        text_ids=list(text["input_ids"]),
        text_token_spans=[tuple(x) for x in text["offset_mapping"]],
        merged_ids=merged_ids.reshape(-1).tolist(),
        spans=prompt.spans,
        frames=frames,
        frame_grids=frame_grids,
        option_letters=sample.option_letters(),
        true_letter=sample.answer_letter,
    )


@dataclasses.dataclass(frozen=True)
class TextInFramesLayout(TokenLayout):
    """A layout whose `video` and `frame_t` groups also hold the text between the frames.

    For models whose reference code cuts that text with the frames (VideoLLaMA3's timestamps
    and commas). The (T, H, W) grids still read the frame tokens alone: `frame_tokens`.
    """

    frame_tokens: tuple[np.ndarray, ...] = ()

    def video_positions(self) -> np.ndarray:
        if len(set(self.grids)) > 1:
            return super().video_positions()  # raises, naming the grids
        return np.concatenate(self.frame_tokens).reshape(self.video_grid)

    def frame_positions(self, t: int) -> np.ndarray:
        return self.frame_tokens[t].reshape(self.grids[t])


def frames_with_text(layout: TokenLayout) -> TextInFramesLayout:
    """`layout` with the video region's text given to the frames: frame t runs from just after
    frame t−1's last token (frame 0: the region's start) to its own last token, the last frame
    to the region's end, so the separator before a frame's text is that frame's (the reference's
    split at the commas); `video` is the whole region and no `video_markers` remain."""
    tokens = [layout[f"frame_{t}"] for t in range(layout.num_frames)]
    system = layout.groups["system"]
    start = int(system[-1]) + 1 if system.size else 0
    region = [layout["video"]] + ([layout[MARKERS]] if MARKERS in layout.groups else [])
    stop = int(max(int(r.max()) for r in region)) + 1
    groups = {k: v for k, v in layout.groups.items() if k != MARKERS}
    begin = start
    for t, own in enumerate(tokens):
        end = stop if t == len(tokens) - 1 else int(own.max()) + 1
        groups[f"frame_{t}"] = np.arange(begin, end, dtype=np.int64)
        begin = end
    groups["video"] = np.arange(start, stop, dtype=np.int64)
    fields = {f.name: getattr(layout, f.name) for f in dataclasses.fields(TokenLayout)}
    return TextInFramesLayout(**{**fields, "groups": groups}, frame_tokens=tuple(tokens))


def to_device(inputs: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict:
    """Tensors on the model's device; floating pixel values in the model's dtype."""
    out = {}
    for key, value in inputs.items():
        if not isinstance(value, torch.Tensor):
            continue
        value = value.to(device)
        if key.startswith("pixel_values") and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value
    return out
