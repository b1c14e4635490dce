"""Adapter for PLLaVA checkpoints: the paper's LLaVA-NeXT-7B/13B-Video-FT.

Picked when config.json says `model_type: "llava"` and carries PLLaVA's pooling keys (or names
`PllavaForConditionalGeneration`): a plain LLaVA-1.5 image checkpoint is not a video model.
Pooling defaults to the reference's 8-12-12 whatever the config says, as the reference scripts
pass `--pooling_shape` over it; `--pooling T-H-W` changes it, and T is the frames read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from flowtrace.data import Sample
from flowtrace.errors import FlowtraceError
from flowtrace.models.base import Adapter, LoadedModel, Prepared
from flowtrace.models.checkpoint import (
    build_empty,
    init_random,
    iter_tensors,
    load_strict,
    load_tokenizer,
    read_config,
    resolve_file,
    weight_files,
)
from flowtrace.models.inputs import FramesProcessor, placeholder_frames, prompt_layout, to_device
from flowtrace.models.pllava_model import PAPER_POOLING, PllavaConfig, PllavaForVideo
from flowtrace.models.prompts import EVAL_MVBENCH

PLLAVA_KEYS = ("pooling_shape", "frame_shape", "use_pooling", "pooling_method")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Weights of the LLaVA-NeXT parent that PLLaVA does not use (the reference loads non-strictly).
UNUSED = ("image_newline",)


class PllavaAdapter(Adapter):
    name = "pllava"
    model_types = ("llava",)
    layers_path = "language_model.model.layers"
    final_norm_path = "language_model.model.norm"
    lm_head_path = "language_model.lm_head"
    template = EVAL_MVBENCH
    default_frames = PAPER_POOLING[0]
    summary = "PLLaVA (LLaVA-NeXT-7B/13B-Video-FT of the paper): CLIP + Llama, 3D avg pooling"
    needs = (
        "config.json with model_type 'llava' and PLLaVA's pooling_shape; safetensors/bin in "
        "PLLaVA's key layout; tokenizer with '<image>'; --pooling T-H-W (default 8-12-12)"
    )

    @classmethod
    def accepts(cls, config: dict[str, Any]) -> bool:
        pllava_arch = any("pllava" in a.lower() for a in config.get("architectures") or [])
        return config.get("model_type") == "llava" and (
            pllava_arch or any(k in config for k in PLLAVA_KEYS)
        )

    def load(
        self,
        source: str,
        *,
        device: str,
        dtype: torch.dtype,
        attn: str,
        pooling: tuple[int, int, int] | None = None,
        weights: bool = True,
    ) -> tuple[Any, Any]:
        from transformers import CLIPImageProcessor

        pooling = tuple(pooling or PAPER_POOLING)
        config = PllavaConfig.from_raw(read_config(source), pooling)
        model = build_empty(lambda: PllavaForVideo(config, attn=attn, dtype=dtype), device, dtype)
        if weights:
            load_strict(
                model, iter_tensors(weight_files(source)), source, rename=clip_renamer(model)
            )
        else:
            init_random(model)
        self.default_frames = pooling[0]
        tokenizer = load_tokenizer(source)
        if resolve_file(source, "preprocessor_config.json", required=False):
            image_processor = CLIPImageProcessor.from_pretrained(source)
        else:
            side = config.vision_config.image_size
            image_processor = CLIPImageProcessor(
                size={"shortest_edge": side},
                crop_size={"height": side, "width": side},
                image_mean=CLIP_MEAN,
                image_std=CLIP_STD,
            )
        shortest = image_processor.size.get("shortest_edge", config.vision_config.image_size)
        processor = FramesProcessor(
            tokenizer,
            image_processor,
            video_token=tokenizer.convert_ids_to_tokens(config.video_token_id),
            tokens_for=lambda frames: int(np.prod(pooling)),
            prepare_frames=lambda frames: resize_longshort(frames, shortest),
        )
        return model.eval(), processor

    def video_grid(self, loaded: LoadedModel, frames: int) -> tuple[int, int, int]:
        return tuple(loaded.model.config.pooling_shape)

    def prepare(self, loaded: LoadedModel, sample: Sample, frames: np.ndarray) -> Prepared:
        processor = loaded.processor
        prompt = self.template.render(sample, processor.video_token)
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


def clip_renamer(model: torch.nn.Module) -> Callable[[str], str | None]:
    """Original PLLaVA key -> our key, across transformers versions.

    PLLaVA saved CLIP as `vision_tower.vision_model.*`; transformers 5.2x's CLIPVisionModel has no
    `vision_model` level any more. Old checkpoints may also hold CLIP's `position_ids` buffer.
    """
    nested = any(k.startswith("vision_tower.vision_model.") for k in model.state_dict())

    def rename(key: str) -> str | None:
        if key in UNUSED or key.endswith("embeddings.position_ids"):
            return None
        if not nested and key.startswith("vision_tower.vision_model."):
            return "vision_tower." + key[len("vision_tower.vision_model.") :]
        return key

    return rename


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
        return list(frames)
    return [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames]
