"""Base of the adapters for transformers-native VideoLLMs (their own model and processor classes).

The processor expands the prompt's video placeholder as it likes (per-frame timestamps,
delimiters, a trailing newline embedding); the layout is read back from its ids: frame tokens are
the `video_token_id` positions, chunked per temporal frame, the rest of the video region goes to
`video_markers`.

Variable-resolution models may get frames centre-cropped and resized to a fixed side first
(`grid_side` merged tokens, 12 as the paper's 12×12 pooling; Qwen-VL), so every sample of a run
has the same (T, H, W) grid and the cubes stack; those that follow their reference's resizing
(`square_crop` False: VideoLLaMA3) keep each video's aspect ratio, and their grid varies with it.
The grid per frame is always read from the processor's output, not assumed.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import numpy as np

from flowtrace.data import Sample
from flowtrace.data.video import VideoFrames
from flowtrace.errors import FlowtraceError, ModelError
from flowtrace.models.base import Adapter, LoadedModel, LoadOptions, Prepared
from flowtrace.models.checkpoint import (
    build_empty,
    init_random,
    load_processor,
    quiet_transformers,
)
from flowtrace.models.inputs import placeholder_frames, prompt_layout, to_device
from flowtrace.tokens.layout import TokenLayout


class HFVideoAdapter(Adapter):
    layers_path = "model.language_model.layers"
    final_norm_path = "model.language_model.norm"
    lm_head_path = "lm_head"
    model_class: ClassVar[str]  # transformers class name
    media: ClassVar[str | None] = None  # prompt text for the video; None: processor.video_token
    videos_kwargs: ClassVar[dict[str, Any]] = {}
    trailing_tokens: ClassVar[int] = 0  # video placeholders after the frames (no frame of theirs)
    grid_side: ClassVar[int | None] = None  # fixed merged tokens per frame side (variable-res)
    square_crop: ClassVar[bool] = True  # with grid_side: crop and resize frames to that square
    frame_token_attr: ClassVar[str] = "video_token_id"  # processor attribute: frame placeholder

    def load(self, source: str, options: LoadOptions) -> tuple[Any, Any]:
        import transformers
        from transformers import AutoProcessor

        self.refuse_pooling(options.pooling)
        cls = getattr(transformers, self.model_class, None)
        if cls is None:
            raise FlowtraceError(
                f"this transformers ({transformers.__version__}) has no {self.model_class}; "
                "upgrade transformers to use the " + self.name + " adapter"
            )
        # The processor first: a broken tokenizer is named before the weights load.
        processor = load_processor(lambda: AutoProcessor.from_pretrained(source), source)
        model = hf_model(cls, source, options)
        return model, processor

    # -- per family ------------------------------------------------------------------------------

    def frame_grid(
        self, loaded: LoadedModel, inputs: dict[str, Any], frames: int
    ) -> tuple[int, int, int]:
        """(T, H, W) of the video tokens the processor made for `frames` input frames."""
        raise NotImplementedError

    def pixel_side(self, loaded: LoadedModel) -> int:
        """Frame side in pixels for `grid_side` merged tokens."""
        raise NotImplementedError

    def extra_kwargs(self, loaded: LoadedModel, frames: np.ndarray) -> dict[str, Any]:
        """Processor keyword arguments that depend on the frames (metadata, sizes)."""
        return {}

    def group_layout(self, layout: TokenLayout) -> TokenLayout:
        """The layout as this family's reference groups the video region (default: as built)."""
        return layout

    # -- shared ----------------------------------------------------------------------------------

    def video_grid(self, loaded: LoadedModel, frames: int) -> tuple[int, int, int]:
        """The grid the processor gives `frames` frames of this adapter's size (asked, not
        assumed: processors may shrink frames to fit their pixel budget)."""
        cache = self.__dict__.setdefault("_grids", {})
        if frames not in cache:
            side = self.pixel_side(loaded) if self.grid_side is not None else 64
            blank = np.zeros((frames, side, side, 3), dtype=np.uint8)
            inputs = loaded.processor(
                text=self.media or loaded.processor.video_token,
                videos=[blank],
                return_tensors="pt",
                **self.videos_kwargs,
                **self.extra_kwargs(loaded, VideoFrames(blank, times=np.arange(frames))),
            )
            cache[frames] = self.frame_grid(loaded, inputs, frames)
        return cache[frames]

    def prepare(self, loaded: LoadedModel, sample: Sample, frames: np.ndarray) -> Prepared:
        processor = loaded.processor
        extra = self.extra_kwargs(loaded, frames)
        if self.grid_side is not None and self.square_crop:
            frames = square_frames(frames, self.pixel_side(loaded))
        prompt = self.template.render(sample, self.media or processor.video_token)
        inputs = processor(
            text=prompt.text,
            videos=[np.asarray(frames)],
            return_tensors="pt",
            **self.videos_kwargs,
            **extra,
        )
        ids = inputs["input_ids"]
        grid = self.frame_grid(loaded, inputs, len(frames))
        token_id = getattr(processor, self.frame_token_attr)
        positions = placeholder_frames(ids, token_id, grid, trailing=self.trailing_tokens)
        layout = prompt_layout(
            processor.tokenizer, prompt, ids, positions, [grid[1:]] * grid[0], sample
        )
        layout = self.group_layout(layout)
        return Prepared(
            inputs=to_device(dict(inputs), loaded.device, loaded.dtype),
            layout=layout,
            prompt=prompt.text,
        )


def hf_model(cls: Any, source: str, options: LoadOptions) -> Any:
    """A transformers model class's checkpoint on the device, or (`options.weights` False) its
    config.json's architecture with seeded random weights, in eval mode."""
    if options.weights:
        # Mismatched shapes are collected and named here rather than raised by transformers
        # below a table of every key.
        with quiet_transformers():
            model, info = cls.from_pretrained(
                source,
                dtype=options.dtype,
                attn_implementation=options.attn,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
        mismatched = sorted(info.get("mismatched_keys") or [])
        if mismatched:
            key, stored, wanted = mismatched[0]
            more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
            raise ModelError(
                f"model={source}: weight {key} has shape {tuple(stored)} in the checkpoint, the "
                f"config implies {tuple(wanted)}{more}; config.json and the weights are of "
                "different models: restore the checkpoint's own config.json"
            )
        model = model.to(options.device)
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source)
        model = build_empty(
            lambda: cls._from_config(config, attn_implementation=options.attn, dtype=options.dtype),
            options.device,
            options.dtype,
        )
        init_random(model)
    return model.eval()


def square_frames(frames: np.ndarray, side: int) -> np.ndarray:
    """Centre square crop, bicubic resize to side×side (fixed tokens per frame)."""
    from PIL import Image

    height, width = frames.shape[1:3]
    short = min(height, width)
    top, left = (height - short) // 2, (width - short) // 2
    out = []
    for frame in frames:
        crop = Image.fromarray(frame[top : top + short, left : left + short])
        out.append(np.asarray(crop.resize((side, side), Image.Resampling.BICUBIC)))
    return np.stack(out)


def has_class(name: str) -> bool:
    return getattr(importlib.import_module("transformers"), name, None) is not None
