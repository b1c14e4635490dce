"""Base of the adapters for checkpoints read in their original layout (PLLaVA, InternVL chat).

These ship no transformers processor: frames are resized as PllavaProcessor does (the reference
runs both families through it), then go through a CLIP image processor (the checkpoint's, or the
reference's fallback), and `FramesProcessor` expands the prompt's one video token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from flowtrace.data import Sample
from flowtrace.errors import FlowtraceError
from flowtrace.models.base import Adapter, LoadedModel, LoadOptions, Prepared
from flowtrace.models.checkpoint import (
    build_empty,
    init_random,
    iter_tensors,
    load_strict,
    resolve_file,
    weight_files,
)
from flowtrace.models.inputs import FramesProcessor, placeholder_frames, prompt_layout, to_device


class OriginalLayoutAdapter(Adapter):
    # Both wrap a transformers causal LM under the original's `language_model`.
    layers_path = "language_model.model.layers"
    final_norm_path = "language_model.model.norm"
    lm_head_path = "language_model.lm_head"
    media: ClassVar[str | None] = None  # prompt text for the video; None: the video token itself

    def prepare(self, loaded: LoadedModel, sample: Sample, frames: np.ndarray) -> Prepared:
        processor = loaded.processor
        prompt = self.template.render(sample, self.media or processor.video_token)
        inputs = processor(text=prompt.text, videos=[frames])
        ids = inputs["input_ids"]
        grid = self.video_grid(loaded, len(frames))
        positions = placeholder_frames(ids, processor.video_token_id, grid)
        layout = prompt_layout(
            processor.tokenizer, prompt, ids, positions, [grid[1:]] * grid[0], sample
        )
        return Prepared(
            inputs=to_device(inputs, loaded.device, loaded.dtype), layout=layout, prompt=prompt.text
        )


def build_model(
    factory: Callable[[], torch.nn.Module],
    source: str,
    options: LoadOptions,
    rename: Callable[[torch.nn.Module], Callable[[str], str | None]] | None = None,
) -> torch.nn.Module:
    """`factory`'s module on the device, with the checkpoint's weights under their original
    names (`rename(model)` maps a saved key to ours, None to skip it), or seeded random ones."""
    model = build_empty(factory, options.device, options.dtype)
    if options.weights:
        tensors = iter_tensors(weight_files(source))
        if rename is None:
            load_strict(model, tensors, source)
        else:
            load_strict(model, tensors, source, rename=rename(model))
    else:
        init_random(model)
    return model


def frames_processor(
    source: str,
    tokenizer: Any,
    *,
    side: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    video_token: str,
    tokens_for: Callable[[int], int],
) -> FramesProcessor:
    """The checkpoint's CLIP image processor, or the reference's fallback when it has none
    (short side to `side`, centre crop side×side, `mean`/`std`), behind PLLaVA's resizing."""
    from transformers import CLIPImageProcessor

    if resolve_file(source, "preprocessor_config.json", required=False):
        image_processor = CLIPImageProcessor.from_pretrained(source)
    else:
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
            image_mean=mean,
            image_std=std,
        )
    shortest = image_processor.size.get("shortest_edge", side)
    return FramesProcessor(
        tokenizer,
        image_processor,
        video_token=video_token,
        tokens_for=tokens_for,
        prepare_frames=lambda frames: resize_longshort(frames, shortest),
    )


def resize_longshort(frames: np.ndarray, clip_resolution: int) -> list[np.ndarray]:
    """PllavaProcessor.resize_crop_longshort for one video: bicubic resize of the short side.

    The short side goes to max(clip_resolution, min(short, 640 / aspect)) keeping the aspect
    ratio; the CLIP image processor then resizes and centre-crops to its input size. With one
    video the reference's crop of the long side is empty.
    """
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise FlowtraceError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    height, width = frames.shape[1:3]
    short, long = min(height, width), max(height, width)
    rate = long / short
    target = max(min(short, int(min(640, long) / rate)), clip_resolution)
    new_long = int(target * rate)
    size = (new_long, target) if width >= height else (target, new_long)  # PIL: (width, height)
    if (width, height) == size:
        return list(np.asarray(frames))
    return [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames]
