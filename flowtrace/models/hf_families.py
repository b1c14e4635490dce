"""LLaVA-OneVision, InternVL (transformers-native, e.g. InternVL3) and VideoLLaMA3 adapters.

- LLaVA-OneVision: per frame, SigLIP patches bilinearly pooled 2× (27×27 → 14×14), one newline
  embedding after the last frame (→ video_markers).
- InternVL (HF): "<video>" becomes "Frame1: <img><IMG_CONTEXT>×256</img>\\n…"; the frame text and
  delimiters go to video_markers.
- VideoLLaMA3: "Time 0.0s:" + tokens per frame, frames joined by ","; token compression off and
  frames stamped at 1 fps, as the reference's VideoLLaMA3 runs (which counted the time text and
  commas inside the frame ranges; here they are video_markers). Its template is the reference's
  single user turn ending "Answer with the option's letter … only give the best option." and no
  answer prefix.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from flowtrace.models.base import LoadedModel
from flowtrace.models.hf_video import HFVideoAdapter
from flowtrace.models.templates import EVAL_MVBENCH_CHATML, VIDEOLLAMA3_TVBENCH


class LlavaOnevisionAdapter(HFVideoAdapter):
    name = "llava_onevision"
    model_types = ("llava_onevision",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    template = EVAL_MVBENCH_CHATML
    trailing_tokens = 1  # the image_newline embedding after the frames
    summary = "LLaVA-OneVision (HF): SigLIP, 2× bilinear pooling per frame, newline after video"
    needs = "transformers-format checkpoint (model_type 'llava_onevision') with its processor"

    def frame_grid(
        self, loaded: LoadedModel, inputs: dict[str, Any], frames: int
    ) -> tuple[int, int, int]:
        vision = loaded.model.config.vision_config
        side = math.ceil((vision.image_size // vision.patch_size) / 2)
        return (frames, side, side)


class InternVLAdapter(HFVideoAdapter):
    name = "internvl"
    model_types = ("internvl",)
    model_class = "InternVLForConditionalGeneration"
    template = EVAL_MVBENCH_CHATML
    frame_token_attr = "image_token_id"  # frames are <IMG_CONTEXT> runs
    videos_kwargs: ClassVar[dict[str, Any]] = {"do_sample_frames": False}
    summary = "InternVL3 / InternVL (HF-native): pixel shuffle, 'FrameN: <img>…</img>' per frame"
    needs = "transformers-format checkpoint (model_type 'internvl', e.g. OpenGVLab/*-hf)"

    def frame_grid(
        self, loaded: LoadedModel, inputs: dict[str, Any], frames: int
    ) -> tuple[int, int, int]:
        config = loaded.model.config
        patches = config.vision_config.image_size[0] // config.vision_config.patch_size[0]
        side = int(patches * config.downsample_ratio)
        return (frames, side, side)


class VideoLlama3Adapter(HFVideoAdapter):
    name = "video_llama_3"
    model_types = ("video_llama_3",)
    model_class = "VideoLlama3ForConditionalGeneration"
    template = VIDEOLLAMA3_TVBENCH
    grid_side = 12
    videos_kwargs: ClassVar[dict[str, Any]] = {
        "do_sample_frames": False,
        "use_token_compression": False,
    }
    summary = "VideoLLaMA3 (HF): 'Time t s:' + 12×12 tokens per frame, no token compression"
    needs = (
        "transformers-format checkpoint (model_type 'video_llama_3', e.g. *VideoLLaMA3*-hf); "
        "the original remote-code release is refused"
    )

    def pixel_side(self, loaded: LoadedModel) -> int:
        patch = loaded.model.config.vision_config.patch_size
        return self.grid_side * patch * loaded.processor.video_processor.merge_size

    def frame_grid(
        self, loaded: LoadedModel, inputs: dict[str, Any], frames: int
    ) -> tuple[int, int, int]:
        t, h, w = (int(x) for x in inputs["video_grid_thw"][0])
        merge = int(inputs["video_merge_sizes"][0])
        return (t, h // merge, w // merge)

    def extra_kwargs(self, frames: np.ndarray) -> dict[str, Any]:
        count = len(frames)
        metadata = {"fps": 1.0, "frames_indices": list(range(count)), "total_num_frames": count}
        return {"video_metadata": [metadata]}
