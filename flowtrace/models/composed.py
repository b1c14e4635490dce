"""A VideoLLM composed of transformers parts: vision encoder → projector → causal LM.

PLLaVA and InternVL chat checkpoints have no transformers class. Ours keeps their module names
(`vision_tower`/`vision_model`, `multi_modal_projector`/`mlp1`, `language_model`), so their weights
load without renaming, and uses transformers' own decoder (Llama, Phi-3, Qwen2) as
`language_model`: its attention takes the additive 4D `attention_mask` kwarg the knockout swaps.

The video features replace the processor's placeholder tokens one for one (the processor expands
the prompt's single placeholder into T·H·W of them), which gives the same sequence as the
reference code's merge of features at one placeholder, with positions 0..L-1.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from flowtrace.errors import FlowtraceError


class ComposedConfig(PretrainedConfig):
    """Base of our configs: `text_config` is the LM's, `video_token_id` the video placeholder."""

    model_type = "flowtrace_composed"

    def get_text_config(self, *args: Any, **kwargs: Any) -> PretrainedConfig:
        return self.text_config


class ComposedVideoLM(PreTrainedModel):
    """Subclasses build `language_model` and implement `get_video_features`."""

    config_class = ComposedConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    language_model: PreTrainedModel

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) frames -> (B, N, D) embeddings, N video tokens per video."""
        raise NotImplementedError

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.language_model.get_output_embeddings()

    def embed(
        self, input_ids: torch.Tensor, pixel_values_videos: torch.Tensor | None
    ) -> torch.Tensor:
        """Token embeddings with the video features written over the placeholders."""
        placeholder = input_ids == self.config.video_token_id
        # The placeholder id may lie past the embedding table (the reference code maps it to a
        # valid id before the lookup); its embedding is overwritten anyway.
        embeds = self.get_input_embeddings()(input_ids.masked_fill(placeholder, 0))
        if pixel_values_videos is None:
            if placeholder.any():
                raise FlowtraceError("the prompt has video placeholders but no frames were given")
            return embeds
        features = self.get_video_features(pixel_values_videos)
        if features.shape[:2] != (input_ids.shape[0], int(placeholder.sum(-1).max())) or bool(
            (placeholder.sum(-1) != features.shape[1]).any()
        ):
            raise FlowtraceError(
                f"the model made {features.shape[1]} video embeddings per video but the prompt "
                f"holds {placeholder.sum(-1).tolist()} placeholders; the processor and the "
                "pooling/frame settings disagree"
            )
        features = features.to(embeds.dtype).reshape(-1, embeds.shape[-1])
        return embeds.masked_scatter(placeholder.unsqueeze(-1), features)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if inputs_embeds is None:
            if input_ids is None:
                raise FlowtraceError("give input_ids or inputs_embeds")
            inputs_embeds = self.embed(input_ids, pixel_values_videos)
        # Cache, position and output kwargs pass straight to the causal LM, whatever this
        # transformers version calls them.
        return self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs
        )
