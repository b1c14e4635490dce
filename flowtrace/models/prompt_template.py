"""Prompt templates: the reference code's conversation modes, rendered with character spans.

Spans (not string search on decoded tokens) are what the TokenLayout maps onto tokens through the
tokenizer's offset mapping, so a question that repeats an option's words cannot be confused with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowtrace.data import Sample

# The reference code's SYSTEM_MVBENCH (tasks/eval/eval_utils.py), used with conv mode eval_mvbench.
SYSTEM_MVBENCH = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail "
    "and movement of objects, and the action and pose of persons. Based on your observations, "
    "select the best option that accurately addresses the question.\n"
)


@dataclass(frozen=True)
class PromptTemplate:
    """A single-turn multiple-choice conversation as the reference code's `Conversation` renders it.

    The text is: system + sep + user + media + "\\n" + sep + user + query + " " + post_query + sep
    + assistant + answer_prefix, which is what `conv.get_prompt()` gives for eval_mvbench.
    """

    name: str
    system: str = SYSTEM_MVBENCH
    user: str = "USER: "
    assistant: str = "ASSISTANT:"
    sep: str = " "
    post_query: str = "\nOnly give the best option."
    answer_prefix: str = "Best option:("

    def render(self, sample: Sample, media_token: str) -> RenderedPrompt:
        pieces: list[tuple[str | None, str]] = []
        query = question_block(sample)
        pieces.append(("system", self.system))
        pieces.append((None, self.sep + self.user))
        pieces.append(("video", media_token))
        pieces.append((None, "\n" + self.sep + self.user))
        query_start = sum(len(text) for _, text in pieces)
        pieces.append(("query", query.text))
        pieces.append(("prompt_tail", self._tail(sample)))
        spans: dict[str, tuple[int, int]] = {}
        text = ""
        for name, piece in pieces:
            if name is not None:
                spans[name] = (len(text), len(text) + len(piece))
            text += piece
        for name, (a, b) in query.spans.items():
            spans[name] = (query_start + a, query_start + b)
        # The tail's leading space belongs to no token of interest; keep the span on visible text.
        a, b = spans["prompt_tail"]
        tail = text[a:b]
        spans["prompt_tail"] = (a + len(tail) - len(tail.lstrip(" ")), b)
        return RenderedPrompt(text=text, spans=spans)

    def _tail(self, sample: Sample) -> str:
        """After the question: the instruction and the start of the assistant's turn.

        Open-ended samples have no instruction and start the reply with their own answer prompt
        (none for VCGBench), as the reference's open-ended analysis builds them. Video-MME's
        options carry their letters ("A. …"), so its answer prefix drops the parenthesis.
        """
        if sample.open_ended:
            return self.sep + self.assistant + (sample.answer_prompt or "")
        prefix = self.answer_prefix
        if sample.style == "letters":
            prefix = prefix.removesuffix("(")
        return " " + self.post_query + self.sep + self.assistant + prefix


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    spans: dict[str, tuple[int, int]]  # group name -> [start, end) character span in `text`


@dataclass(frozen=True)
class QuestionBlock:
    text: str
    spans: dict[str, tuple[int, int]]


def question_block(sample: Sample) -> QuestionBlock:
    """Reference `qa_template`: "Question: …\\nOptions:\\n(A) …\\n(B) …" and each part's span.

    Other styles (Sample.style) as the reference words them: Video-MME's "A. …" options with the
    last newline kept; open-ended "Question: …\\n" without options; VCGBench's bare question.
    """
    if sample.style == "plain":
        return QuestionBlock(text=sample.question, spans={"question": (0, len(sample.question))})
    text = "Question: "
    spans = {"question": (len(text), len(text) + len(sample.question))}
    text += sample.question + "\n"
    if sample.open_ended:
        return QuestionBlock(text=text, spans=spans)
    text += "Options:\n"
    lettered = sample.style == "letters"
    for letter, candidate in zip(sample.option_letters(), sample.candidates, strict=True):
        option = f"{letter}. {candidate}" if lettered else f"({letter}) {candidate}"
        spans[f"option_{letter}"] = (len(text), len(text) + len(option))
        text += option + "\n"
    return QuestionBlock(text=text if lettered else text.rstrip(), spans=spans)


EVAL_MVBENCH = PromptTemplate(name="eval_mvbench")

# Open-ended conv modes of the reference (tasks/eval/eval_utils.py): conv_eval_vcg for VCGBench,
# conv_eval_mvbench_open_ended for TVBench asked open-ended. Same roles and separators as
# eval_mvbench; only the system prompt differs (the tail comes from the sample, see _tail).
SYSTEM_VCGBENCH = (
    "You are Video-ChatGPT, a large vision-language assistant. "
    "You are able to understand the video content that the user provides, and assist the user "
    "with a variety of tasks using natural language."
    "Follow the instructions carefully and explain your answers in detail based on the provided "
    "video."
)
SYSTEM_MVBENCH_OPEN_ENDED = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail "
    "and movement of objects, and the action and pose of persons. Based on your observations, "
    "answer the question concisely.\n"
)
EVAL_VCGBENCH = PromptTemplate(name="eval_vcgbench", system=SYSTEM_VCGBENCH)
EVAL_MVBENCH_OPEN_ENDED = PromptTemplate(
    name="eval_mvbench_open_ended", system=SYSTEM_MVBENCH_OPEN_ENDED
)
