"""Adapter for InternVL chat checkpoints (`model_type: "internvl_chat"`), e.g. the paper's
Mini-InternVL-4B-Video-FT, loaded from their original layout without remote code.

As the reference code (map-the-flow's InternVLChatModel): each of T frames (448×448, one tile)
gives 256 tokens, the prompt's single `<IMG_CONTEXT>` between `<img>` and `</img>` stands for all
T·256 of them, frame-major. Frames are resized as PllavaProcessor does (the reference runs
InternVL through it). `<img>`/`</img>` go to `video_markers`, as the reference's video range
excluded them. The template follows the LLM: Phi-3 → eval_mvbench_phi3, others → eval_mvbench.
"""

from __future__ import annotations

from typing import Any

from flowtrace.errors import FlowtraceError
from flowtrace.models.base import LoadedModel, LoadOptions
from flowtrace.models.checkpoint import load_tokenizer, read_config
from flowtrace.models.family_templates import (
    EVAL_MVBENCH_INTERNVL,
    EVAL_MVBENCH_PHI3,
    INTERNVL_MEDIA,
)
from flowtrace.models.internvl_chat_network import InternVLChatConfig, InternVLChatForVideo
from flowtrace.models.original_layout import OriginalLayoutAdapter, build_model, frames_processor

IMG_CONTEXT = "<IMG_CONTEXT>"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InternVLChatAdapter(OriginalLayoutAdapter):
    name = "internvl_chat"
    model_types = ("internvl_chat",)
    template = EVAL_MVBENCH_PHI3
    media = INTERNVL_MEDIA
    default_frames = 8
    summary = (
        "InternVL chat (Mini-InternVL-4B-Video-FT of the paper): InternViT + pixel shuffle + "
        "Phi-3/Qwen2/Llama, original layout, no remote code"
    )
    needs = (
        "config.json with model_type 'internvl_chat' (vision_config, llm_config); weights in "
        "OpenGVLab's layout; tokenizer with <img>, <IMG_CONTEXT>, </img>; not InternLM2 LLMs"
    )

    def load(self, source: str, options: LoadOptions) -> tuple[Any, Any]:
        raw = read_config(source)
        tokenizer = load_tokenizer(source)
        context_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
        if context_id is None or context_id == tokenizer.unk_token_id:
            raise FlowtraceError(f"model={source}: its tokenizer has no {IMG_CONTEXT} token")
        config = InternVLChatConfig.from_raw(raw, context_id)
        pooling = options.pooling
        if pooling is not None:
            side = int(config.tokens_per_frame**0.5)
            if tuple(pooling[1:]) != (side, side):
                raise FlowtraceError(
                    f"pooling={'-'.join(map(str, pooling))}: InternVL chat has {side}×{side} "
                    f"tokens per frame and no pooling; pass {pooling[0]}-{side}-{side} or the "
                    "frames setting"
                )
            self.default_frames = pooling[0]
        model = build_model(
            lambda: InternVLChatForVideo(config, attn=options.attn, dtype=options.dtype),
            source,
            options,
        )
        self.template = EVAL_MVBENCH_PHI3 if _is_phi3(config) else EVAL_MVBENCH_INTERNVL
        processor = frames_processor(
            source,
            tokenizer,
            side=config.vision_config.image_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            video_token=IMG_CONTEXT,
            tokens_for=lambda frames: config.tokens_per_frame * frames,
        )
        return model.eval(), processor

    def video_grid(self, loaded: LoadedModel, frames: int) -> tuple[int, int, int]:
        side = int(round(loaded.model.config.tokens_per_frame**0.5))
        return (frames, side, side)


def _is_phi3(config: InternVLChatConfig) -> bool:
    return config.text_config.model_type == "phi3" or "phi3" in str(config.template or "")
