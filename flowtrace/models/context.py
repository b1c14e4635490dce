"""The positions a model reads at once (its context), and the check that a sample fits in it.

Past its config's `max_position_embeddings` a rotary model still runs, on positions it was never
trained on, and a prompt of tens of thousands of tokens takes minutes per knockout: a sample
beyond it fails alone, with its reason, before any forward.
"""

from __future__ import annotations

from typing import Any

from flowtrace.data import Sample, SampleError
from flowtrace.models.base import Prepared


def context_length(model: Any) -> int | None:
    """The language model's `max_position_embeddings`, or None where its config names none."""
    try:
        text = model.config.get_text_config()
    except AttributeError:
        text = getattr(model, "config", None)
    value = getattr(text, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def check_prompt(model: Any, prepared: Prepared, sample: Sample, reply_tokens: int = 0) -> None:
    """Fail `sample` (SampleError) where its prompt, and a reply of `reply_tokens`, run past
    the model's context."""
    context = context_length(model)
    tokens = prepared.layout.seq_len
    if context is None or tokens + reply_tokens <= context:
        return
    video = len(prepared.layout.groups.get("video", ()))
    reply = f" and a reply of {reply_tokens}" if reply_tokens else ""
    raise SampleError(
        f"sample {sample.id}: its prompt is {tokens} tokens ({video} of them video, the question "
        f"{len(sample.question.split())} words){reply}, beyond the model's context of {context} "
        "tokens (max_position_embeddings in its config); shorten the question in the "
        "annotation, or give fewer frames"
    )
