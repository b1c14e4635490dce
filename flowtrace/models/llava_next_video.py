"""LLaVA-NeXT-Video (transformers' LlavaNextVideoForConditionalGeneration), the toy's family.

Video tokens: each frame goes through the vision tower, is average-pooled 2×2 and projected; the
processor expands one `<video>` placeholder into T·H·W tokens in frame-major, row-major order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowtrace.data import Sample
from flowtrace.errors import FlowtraceError
from flowtrace.models.base import Adapter, LoadedModel, LoadOptions, Prepared
from flowtrace.models.checkpoint import load_processor
from flowtrace.models.hf_video import hf_model
from flowtrace.models.prompt_template import EVAL_MVBENCH
from flowtrace.tokens.layout import build_layout


class LlavaNextVideoAdapter(Adapter):
    name = "llava_next_video"
    model_types = ("llava_next_video",)
    layers_path = "model.language_model.layers"
    final_norm_path = "model.language_model.norm"
    template = EVAL_MVBENCH
    summary = "LLaVA-NeXT-Video (HF; the embedded toy): CLIP, 2×2 pooling per frame, Llama/Vicuna"
    needs = "transformers-format checkpoint (model_type 'llava_next_video') with its processor"

    def load(self, source: str, options: LoadOptions) -> tuple[Any, Any]:
        from transformers import (
            AutoConfig,
            LlavaNextVideoForConditionalGeneration,
            LlavaNextVideoProcessor,
        )

        from flowtrace.models.planted import PlantedLlavaNextVideo

        self.refuse_pooling(options.pooling)
        config = AutoConfig.from_pretrained(source)
        # A config with a plant (fixed attention routes, flowtrace's ground-truth toy) needs the
        # class that applies it.
        planted = getattr(config, "flowtrace_plant", None)
        cls = PlantedLlavaNextVideo if planted else LlavaNextVideoForConditionalGeneration
        # The processor first: a broken tokenizer is named before the weights load.
        processor = load_processor(lambda: LlavaNextVideoProcessor.from_pretrained(source), source)
        model = hf_model(cls, source, options)
        return model, processor

    def video_grid(self, loaded: LoadedModel, frames: int) -> tuple[int, int, int]:
        config = loaded.model.config
        side = config.vision_config.image_size // config.vision_config.patch_size
        side //= config.spatial_pool_stride
        return (frames, side, side)

    def prepare(self, loaded: LoadedModel, sample: Sample, frames: np.ndarray) -> Prepared:
        processor = loaded.processor
        tokenizer = processor.tokenizer
        prompt = self.template.render(sample, processor.video_token)
        inputs = processor(text=prompt.text, videos=[frames], return_tensors="pt")
        ids = inputs["input_ids"][0]
        video_id = processor.video_token_id
        n_video = int((ids == video_id).sum())
        n_frames = int(inputs["pixel_values_videos"].shape[1])
        grid = self.video_grid(loaded, n_frames)
        if n_video != grid[0] * grid[1] * grid[2]:
            raise FlowtraceError(
                f"processor gave {n_video} video tokens for {n_frames} frames; the model's "
                f"config expects {grid[0]}×{grid[1]}×{grid[2]}"
            )
        text = tokenizer(prompt.text, return_offsets_mapping=True)
        placeholders = [i for i, t in enumerate(text["input_ids"]) if t == video_id]
        if len(placeholders) != 1:
            raise FlowtraceError("the prompt must hold exactly one video placeholder token")
        p = placeholders[0]
        expanded = text["input_ids"][:p] + [video_id] * n_video + text["input_ids"][p + 1 :]
        if expanded != ids.tolist():
            # The layout is computed from the tokenizer's offsets; it is only valid if the processor
            # tokenized the same way, placeholder expansion aside.
            raise FlowtraceError("processor and tokenizer disagree on the prompt's tokens")
        layout = build_layout(
            text_token_spans=text["offset_mapping"],
            spans=prompt.spans,
            placeholder_token=p,
            video_grid=grid,
            option_letters=sample.option_letters(),
            true_letter=sample.answer_letter,
        )
        if getattr(loaded.model.config, "flowtrace_plant", None):
            from flowtrace.models.planted import token_groups

            inputs["token_groups"] = token_groups(layout)
        tensors = {k: v.to(loaded.device) for k, v in inputs.items()}
        if "pixel_values_videos" in tensors:
            tensors["pixel_values_videos"] = tensors["pixel_values_videos"].to(loaded.dtype)
        return Prepared(inputs=tensors, layout=layout, prompt=prompt.text)
