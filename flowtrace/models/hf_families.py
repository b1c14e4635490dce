"""LLaVA-OneVision, InternVL (transformers-native, e.g. InternVL3) and VideoLLaMA3 adapters.

- LLaVA-OneVision: per frame, SigLIP patches bilinearly pooled 2× (27×27 → 14×14), one newline
  embedding after the last frame (→ video_markers).
- InternVL (HF): "<video>" becomes "Frame1: <img><IMG_CONTEXT>×256</img>\\n…"; the frame text and
  delimiters go to video_markers.
- VideoLLaMA3: fed as the reference's VideoLLaMA3 analysis feeds it. Frames: evenly spaced over
  the video or its bound, both ends included (`frame_indices`, whatever the benchmark), each
  stamped with its time as the reference's loader stamps it ("Time 1.4s:" + its tokens, frames
  joined by ","); token compression off; frames keep their aspect ratio, resized to at most
  12×12 tokens per frame on average (1152 for 8 frames) and no crop. The video group is the
  whole region between the "\n" after the user role and the "\n" after the last frame, and each
  frame group holds its timestamp text and the comma before it, as the reference cuts them.
  Its template is the reference's single user turn ending "Answer with the option's letter …
  only give the best option." and no answer prefix.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from flowtrace.data import SampleError
from flowtrace.errors import FlowtraceError
from flowtrace.models.base import LoadedModel
from flowtrace.models.family_templates import EVAL_MVBENCH_CHATML, VIDEOLLAMA3_TVBENCH
from flowtrace.models.hf_video import HFVideoAdapter
from flowtrace.models.inputs import frames_with_text
from flowtrace.tokens.layout import TokenLayout


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


# The reference runs VideoLLaMA3 with max_visual_tokens = frames × 12 × 12, and its image
# processor's least tokens per frame (min_tokens) is 16.
TOKENS_PER_FRAME = 12 * 12
MIN_TOKENS = 16


class VideoLlama3Adapter(HFVideoAdapter):
    name = "video_llama_3"
    model_types = ("video_llama_3",)
    model_class = "VideoLlama3ForConditionalGeneration"
    template = VIDEOLLAMA3_TVBENCH
    grid_side = 12  # the grid of a square video, for `video_grid`; frames are not cropped to it
    square_crop = False
    videos_kwargs: ClassVar[dict[str, Any]] = {
        "do_sample_frames": False,
        "use_token_compression": False,
    }
    summary = (
        "VideoLLaMA3 (HF): 'Time t s:' + tokens per frame, aspect ratio kept within "
        "12×12 tokens a frame, no token compression"
    )
    needs = (
        "transformers-format checkpoint (model_type 'video_llama_3', e.g. *VideoLLaMA3*-hf); "
        "the original remote-code release is refused"
    )

    def pixel_side(self, loaded: LoadedModel) -> int:
        patch = loaded.model.config.vision_config.patch_size
        return self.grid_side * patch * self._merge(loaded)

    def frame_grid(
        self, loaded: LoadedModel, inputs: dict[str, Any], frames: int
    ) -> tuple[int, int, int]:
        t, h, w = (int(x) for x in inputs["video_grid_thw"][0])
        merge = int(inputs["video_merge_sizes"][0])
        return (t, h // merge, w // merge)

    def frame_indices(self, count: int, n: int) -> np.ndarray:
        """n frames evenly spaced over all `count`, both ends included, rounded down."""
        if count < n:
            # The reference's loader would hand over fewer frames than asked for.
            raise SampleError(
                f"the video (or its bound) holds {count} frames, fewer than the {n} that "
                f"VideoLLaMA3 reads; ask for at most {count} frames (--frames)"
            )
        return np.floor(np.linspace(0, count - 1, n)).astype(np.int64)

    def extra_kwargs(self, loaded: LoadedModel, frames: np.ndarray) -> dict[str, Any]:
        times = getattr(frames, "times", None)
        if times is None:
            raise FlowtraceError(
                "VideoLLaMA3 writes each frame's time into the prompt, and these frames carry "
                "none; read them with flowtrace.data.read_frames or sample_frames"
            )
        factor = loaded.model.config.vision_config.patch_size * self._merge(loaded)
        size = {
            "shortest_edge": MIN_TOKENS * factor**2,
            "longest_edge": len(frames) * TOKENS_PER_FRAME * factor**2,
        }
        # The processor writes frame_index / fps: index = the time itself at fps 1.
        metadata = {
            "fps": 1.0,
            "frames_indices": [float(t) for t in times],
            "total_num_frames": len(frames),
        }
        return {"video_metadata": [metadata], "size": size}

    def group_layout(self, layout: TokenLayout) -> TokenLayout:
        return frames_with_text(layout)

    @staticmethod
    def _merge(loaded: LoadedModel) -> int:
        return int(loaded.processor.video_processor.merge_size)
