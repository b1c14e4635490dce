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

from flowtrace.models.base import LoadedModel, LoadOptions
from flowtrace.models.checkpoint import load_tokenizer, read_config
from flowtrace.models.original_layout import OriginalLayoutAdapter, build_model, frames_processor
from flowtrace.models.pllava_network import PAPER_POOLING, PllavaConfig, PllavaForVideo
from flowtrace.models.prompt_template import EVAL_MVBENCH

PLLAVA_KEYS = ("pooling_shape", "frame_shape", "use_pooling", "pooling_method")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Weights of the LLaVA-NeXT parent that PLLaVA does not use (the reference loads non-strictly).
UNUSED = ("image_newline",)


class PllavaAdapter(OriginalLayoutAdapter):
    name = "pllava"
    model_types = ("llava",)
    template = EVAL_MVBENCH
    default_frames = PAPER_POOLING[0]
    summary = "PLLaVA (LLaVA-NeXT-7B/13B-Video-FT of the paper): CLIP + Llama, 3D avg pooling"
    needs = (
        "config.json with model_type 'llava' and PLLaVA's pooling_shape; safetensors/bin in "
        "PLLaVA's key layout; tokenizer with '<image>'; pooling=T-H-W (default 8-12-12)"
    )

    @classmethod
    def accepts(cls, config: dict[str, Any]) -> bool:
        pllava_arch = any("pllava" in a.lower() for a in config.get("architectures") or [])
        return config.get("model_type") == "llava" and (
            pllava_arch or any(k in config for k in PLLAVA_KEYS)
        )

    def load(self, source: str, options: LoadOptions) -> tuple[Any, Any]:
        pooling = tuple(options.pooling or PAPER_POOLING)
        config = PllavaConfig.from_raw(read_config(source), pooling)
        model = build_model(
            lambda: PllavaForVideo(config, attn=options.attn, dtype=options.dtype),
            source,
            options,
            rename=clip_renamer,
        )
        self.default_frames = pooling[0]
        tokenizer = load_tokenizer(source)
        processor = frames_processor(
            source,
            tokenizer,
            side=config.vision_config.image_size,
            mean=CLIP_MEAN,
            std=CLIP_STD,
            video_token=tokenizer.convert_ids_to_tokens(config.video_token_id),
            tokens_for=lambda frames: int(np.prod(pooling)),
        )
        return model.eval(), processor

    def video_grid(self, loaded: LoadedModel, frames: int) -> tuple[int, int, int]:
        return tuple(loaded.model.config.pooling_shape)


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
