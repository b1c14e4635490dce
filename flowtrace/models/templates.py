"""Per-model conversation templates: the reference code's conv modes, and chat formats for the
Hugging Face families the paper did not study.

All keep the reference's multiple-choice wording (SYSTEM_MVBENCH, "Only give the best option."
and the answer prefix "Best option:(") and its two user turns (video alone, then the question),
so pathways are comparable across families; only roles, separators and the media token change.
"""

from __future__ import annotations

from flowtrace.models.prompts import EVAL_MVBENCH, SYSTEM_MVBENCH, PromptTemplate

# tasks/eval/eval_utils.py conv_eval_mvbench_phi3: Mini-InternVL-4B-Video-FT (Phi-3 LLM).
EVAL_MVBENCH_PHI3 = PromptTemplate(
    name="eval_mvbench_phi3", user="<|user|>\n", assistant="<|assistant|>\n", sep=" "
)
# conv_eval_mvbench_internvl: InternVL chat checkpoints on other LLMs; roles as eval_mvbench.
EVAL_MVBENCH_INTERNVL = PromptTemplate(name="eval_mvbench_internvl")
# InternVL chat's media token (INTERNVL_IMG_START/CONTEXT/END in tasks/shared_utils.py).
INTERNVL_MEDIA = "<img><IMG_CONTEXT></img>"

# ChatML (Qwen2/2.5/3 LLMs: Qwen-VL, LLaVA-OneVision, InternVL3, VideoLLaMA3). As the reference's
# conv_eval_mvbench_llavanext, with the system prompt in its own turn as these models are trained.
_IM_END = "<|im_end|>\n"
EVAL_MVBENCH_CHATML = PromptTemplate(
    name="eval_mvbench_chatml",
    system="<|im_start|>system\n" + SYSTEM_MVBENCH.rstrip("\n"),
    user="<|im_start|>user\n",
    assistant="<|im_start|>assistant\n",
    sep=_IM_END,
)

__all__ = [
    "EVAL_MVBENCH",
    "EVAL_MVBENCH_CHATML",
    "EVAL_MVBENCH_INTERNVL",
    "EVAL_MVBENCH_PHI3",
    "INTERNVL_MEDIA",
]
