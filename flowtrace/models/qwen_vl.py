"""Qwen2.5-VL and Qwen3-VL (transformers-native): multimodal RoPE, 2 frames per temporal patch.

One video "frame" group is a temporal patch: `temporal_patch_size` (2) consecutive input frames
share each token, so 8 frames give frame_0..frame_3. The decoder's rotary positions are 3-row
(t, h, w) ids the model computes itself from `video_grid_thw` and `mm_token_type_ids`; the
knockout only swaps the attention mask, which these layers take as an additive 4D tensor.
Qwen3-VL writes "<t seconds>" and `<|vision_start|>…<|vision_end|>` around each temporal patch
(→ video_markers); frames read without times are stamped at 1 fps from 0. Qwen3-VL also adds
visual features into early decoder layers (DeepStack); the engines see that as layer inputs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from flowtrace.models.base import LoadedModel
from flowtrace.models.family_templates import EVAL_MVBENCH_CHATML
from flowtrace.models.hf_video import HFVideoAdapter

QWEN_MEDIA = "<|vision_start|><|video_pad|><|vision_end|>"


class Qwen25VLAdapter(HFVideoAdapter):
    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    model_class = "Qwen2_5_VLForConditionalGeneration"
    template = EVAL_MVBENCH_CHATML
    media = QWEN_MEDIA
    grid_side = 12
    videos_kwargs: ClassVar[dict[str, Any]] = {"do_sample_frames": False}
    summary = "Qwen2.5-VL (HF): M-RoPE, a frame group per 2-frame temporal patch, 12×12 tokens"
    needs = "transformers-format checkpoint (model_type 'qwen2_5_vl') with its processor files"

    def pixel_side(self, loaded: LoadedModel) -> int:
        vision = loaded.model.config.vision_config
        return self.grid_side * vision.patch_size * vision.spatial_merge_size

    def frame_grid(
        self, loaded: LoadedModel, inputs: dict[str, Any], frames: int
    ) -> tuple[int, int, int]:
        t, h, w = (int(x) for x in inputs["video_grid_thw"][0])
        merge = loaded.model.config.vision_config.spatial_merge_size
        return (t, h // merge, w // merge)

    def extra_kwargs(self, loaded: LoadedModel, frames: np.ndarray) -> dict[str, Any]:
        return {"return_mm_token_type_ids": True}


class Qwen3VLAdapter(Qwen25VLAdapter):
    name = "qwen3_vl"
    model_types = ("qwen3_vl",)
    model_class = "Qwen3VLForConditionalGeneration"
    summary = "Qwen3-VL (HF): M-RoPE with timestamps, DeepStack, a frame group per temporal patch"
    needs = "transformers-format checkpoint (model_type 'qwen3_vl') with its processor files"
    final_norm_path = "model.language_model.norm"

    def extra_kwargs(self, loaded: LoadedModel, frames: np.ndarray) -> dict[str, Any]:
        count = len(frames)
        # Frames come without times; stamp them at 1 fps so the prompt's timestamps exist.
        metadata = {"fps": 1.0, "frames_indices": list(range(count)), "total_num_frames": count}
        return {"return_mm_token_type_ids": True, "video_metadata": [metadata]}
