"""Per-model conversation templates: the reference code's conv modes, and chat formats for the
Hugging Face families the paper did not study.

All keep the reference's multiple-choice wording (SYSTEM_MVBENCH, "Only give the best option."
and the answer prefix "Best option:(") and its two user turns (video alone, then the question),
so pathways are comparable across families; only roles, separators and the media token change.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowtrace.data import Sample
from flowtrace.models.prompt_template import (
    EVAL_MVBENCH,
    SYSTEM_MVBENCH,
    PromptTemplate,
    RenderedPrompt,
    question_block,
)

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


@dataclass(frozen=True)
class TurnTemplate:
    """One user turn: prefix, media, a separator, the question block, the tail; no system turn.

    For prompts that PromptTemplate's two-turn layout cannot write (VideoLLaMA3's evaluation).
    """

    name: str
    prefix: str
    after_media: str
    post_query: str
    tail: str
    answer_prefix: str = ""

    def render(self, sample: Sample, media_token: str) -> RenderedPrompt:
        query = question_block(sample)
        text = self.prefix
        spans = {"system": (0, len(text))}
        spans["video"] = (len(text), len(text) + len(media_token))
        text += media_token + self.after_media
        start = len(text)
        text += query.text
        spans["query"] = (start, len(text))
        for name, (a, b) in query.spans.items():
            spans[name] = (start + a, start + b)
        tail = self.post_query + self.tail + self.answer_prefix
        # The tail's span starts at its first visible character, as PromptTemplate's.
        lead = len(tail) - len(tail.lstrip())
        spans["prompt_tail"] = (len(text) + lead, len(text) + len(tail))
        text += tail
        return RenderedPrompt(text=text, spans=spans)


# VideoLLaMA3's TVBench evaluation (videollama3/evaluation/benchmarks/tvbench.py + its chat
# template): one user turn, the video then "\n", the question block, its instruction, no answer
# prefix — the letter is read right after "<|im_start|>assistant\n".
VIDEOLLAMA3_TVBENCH = TurnTemplate(
    name="videollama3_tvbench",
    prefix="<|im_start|>user\n",
    after_media="\n",
    post_query="\nAnswer with the option's letter from the given choices directly and only give "
    "the best option.",
    tail="<|im_end|>\n<|im_start|>assistant\n",
)

__all__ = [
    "EVAL_MVBENCH",
    "EVAL_MVBENCH_CHATML",
    "EVAL_MVBENCH_INTERNVL",
    "EVAL_MVBENCH_PHI3",
    "INTERNVL_MEDIA",
    "VIDEOLLAMA3_TVBENCH",
    "TurnTemplate",
]
