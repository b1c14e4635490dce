"""PLLaVA: a LLaVA(-NeXT) backbone whose video features are pooled by an AdaptiveAvgPool3d.

The paper's LLaVA-NeXT-7B/13B-Video-FT are PLLaVA checkpoints (magic-research/PLLaVA's
`PllavaForConditionalGeneration`). Their layout, kept here so weights load unrenamed:
`vision_tower.vision_model.*` (CLIP), `multi_modal_projector.linear_1/linear_2`,
`language_model.model.*` and `language_model.lm_head` (Llama). config.json says
`model_type: "llava"` plus PLLaVA's own keys (`pooling_shape`, `frame_shape`, `use_pooling`).

Per frame: CLIP hidden states of `vision_feature_layer` without the CLS token, then
linear → act → linear; then the (T, 24, 24) grid of each video is average-pooled to
`pooling_shape` (T', H', W'), flattened frame-major, row-major (the reference's einops order).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM
from transformers.activations import ACT2FN
from transformers.models.auto import CONFIG_MAPPING

from flowtrace.errors import FlowtraceError
from flowtrace.models.composed import ComposedConfig, ComposedVideoLM

# magic-research/PLLaVA's PllavaConfig defaults for keys a saved config may omit.
PLLAVA_DEFAULTS: dict[str, Any] = {
    "image_token_index": 32000,
    "projector_hidden_act": "gelu",
    "vision_feature_select_strategy": "default",
    "vision_feature_layer": -2,
    "pooling_method": "avg",
    "use_pooling": True,
}
# The reference analysis scripts' --pooling_shape default (8 frames of 12×12 tokens).
PAPER_POOLING = (8, 12, 12)


def sub_config(raw: dict[str, Any] | None, default_type: str) -> Any:
    """A transformers config from a saved sub-config dict (saved as a diff from its defaults)."""
    values = dict(raw or {})
    model_type = values.pop("model_type", default_type)
    if model_type not in CONFIG_MAPPING:
        raise FlowtraceError(f"sub-config model_type {model_type!r} is unknown to transformers")
    return CONFIG_MAPPING[model_type](**values)


class PllavaConfig(ComposedConfig):
    model_type = "flowtrace_pllava"

    @classmethod
    def from_raw(cls, raw: dict[str, Any], pooling: tuple[int, int, int]) -> PllavaConfig:
        values = {**PLLAVA_DEFAULTS, **raw}
        config = cls()
        config.vision_config = sub_config(values.get("vision_config"), "clip_vision_model")
        config.text_config = sub_config(values.get("text_config"), "llama")
        config.video_token_id = int(values["image_token_index"])
        config.projector_hidden_act = values["projector_hidden_act"]
        config.vision_feature_layer = int(values["vision_feature_layer"])
        config.vision_feature_select_strategy = values["vision_feature_select_strategy"]
        if values["vision_feature_select_strategy"] != "default":
            raise FlowtraceError(
                "PLLaVA checkpoints use vision_feature_select_strategy 'default' (drop CLS); "
                f"this config says {values['vision_feature_select_strategy']!r}"
            )
        if values.get("pooling_method", "avg") != "avg" or not values.get("use_pooling", True):
            raise FlowtraceError("only PLLaVA's average pooling (use_pooling, 'avg') is supported")
        config.pooling_shape = tuple(int(x) for x in pooling)
        config.pad_token_id = values.get("pad_token_id")
        config.tie_word_embeddings = False
        return config


class PllavaProjector(nn.Module):
    """linear_1 → act → linear_2 per patch, then AdaptiveAvgPool3d over (T, H, W)."""

    def __init__(self, config: PllavaConfig) -> None:
        super().__init__()
        vision, text = config.vision_config.hidden_size, config.text_config.hidden_size
        self.linear_1 = nn.Linear(vision, text, bias=True)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text, text, bias=True)
        self.pooling_shape = config.pooling_shape

    def forward(self, patches: torch.Tensor, videos: int, side: int) -> torch.Tensor:
        """(videos·T, side·side, Dv) -> (videos, T'·H'·W', D)."""
        hidden = self.linear_2(self.act(self.linear_1(patches)))
        frames = hidden.shape[0] // videos
        grid = hidden.reshape(videos, frames, side, side, -1).permute(0, 4, 1, 2, 3)
        pooled_t = self.pooling_shape[0]
        if frames < pooled_t:
            # The reference repeats frames before pooling when a video has too few of them
            # (PllavaMultiModalProjector: repeat_interleave(int(T'/T) + 1)[:T']).
            grid = grid.repeat_interleave(pooled_t // frames + 1, dim=2)[:, :, :pooled_t]
        pooled = F.adaptive_avg_pool3d(grid, self.pooling_shape)  # (videos, D, T', H', W')
        return pooled.permute(0, 2, 3, 4, 1).reshape(videos, -1, pooled.shape[1])


class PllavaForVideo(ComposedVideoLM):
    config_class = PllavaConfig

    def __init__(self, config: PllavaConfig, attn: str = "sdpa", dtype: torch.dtype | None = None):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(
            config.vision_config, attn_implementation=attn, dtype=dtype
        )
        self.multi_modal_projector = PllavaProjector(config)
        self.language_model = AutoModelForCausalLM.from_config(
            config.text_config, attn_implementation=attn, dtype=dtype
        )
        self.post_init()

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        videos, frames = pixel_values_videos.shape[:2]
        pixels = pixel_values_videos.flatten(0, 1).to(self.vision_tower.dtype)
        out = self.vision_tower(pixels, output_hidden_states=True)
        patches = out.hidden_states[self.config.vision_feature_layer][:, 1:]
        side = int(round(patches.shape[1] ** 0.5))
        if side * side != patches.shape[1]:
            raise FlowtraceError(f"the vision tower gave {patches.shape[1]} patches, not a square")
        return self.multi_modal_projector(patches, videos, side)
