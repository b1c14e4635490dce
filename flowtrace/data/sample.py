"""One video QA sample, as every dataset reader produces it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flowtrace.errors import DataError

# How the reference code words a sample's question (see
# flowtrace.models.prompt_template.question_block):
#   options  "Question: …\nOptions:\n(A) …"           MVBench, TVBench, TOMATO, LongVideoBench
#   letters  "Question: …\nOptions:\nA. …\n"          Video-MME (its options carry the letters)
#   open     "Question: …\n", no options              TVBench open-ended
#   plain    the question as written, no options      VCGBench
STYLES = ("options", "letters", "open", "plain")
OPEN_ENDED_STYLES = ("open", "plain")


class SampleError(DataError):
    """A problem with one sample (missing or corrupt video, bad annotation).

    The runner records the sample as failed with `str(err)` as the reason and goes on.
    """


@dataclass(frozen=True)
class FrameRule:
    """How the reference code picks a sample's frames where it differs from the default.

    The default (no rule) is the midpoint of N equal segments of the video or of its bound, at the
    video's own frame rate; frame folders count as 1 fps, numbered from their first file.
    """

    fps: float | None = None  # frame folders: their frame rate (MVBench's TVQA frames: 3)
    first_index: int = 0  # frame folders numbered from 1 (00001.jpg) as MVBench's TVQA frames
    duration: float | None = None  # LongVideoBench: its loader's stride over `duration` seconds


@dataclass(frozen=True)
class Sample:
    """A question about one video; fields may be empty until validated.

    Multiple-choice samples list `candidates` and name the correct one in `answer`. Open-ended
    samples (`style` "open" or "plain") hold the reference answer in `answer`; their candidates,
    if any, are the short answers the reference code compares words against, never shown to the
    model. A reader that cannot build a sample from its annotation says why in `problem`, and
    `validate_sample` fails that sample alone.
    """

    id: str  # unique in the dataset, e.g. "Moving Direction/0007"
    task: str  # human task name, e.g. "Moving Direction"
    video: Path  # absolute path of the video file (or frame folder)
    question: str  # without options
    candidates: tuple[str, ...]
    answer: str  # the correct candidate's text; open-ended: the reference answer
    bound: tuple[float, float] | None = None  # start/end seconds
    style: str = "options"  # one of STYLES
    answer_prompt: str | None = None  # open-ended: how the reply starts, e.g. "\nThe number … is"
    frame_rule: FrameRule | None = None
    problem: str = ""  # why the annotation entry could not be read

    @property
    def open_ended(self) -> bool:
        """True where the model answers in words, not by picking an option letter."""
        return self.style in OPEN_ENDED_STYLES

    def answer_index(self) -> int:
        """Position of `answer` among `candidates`."""
        try:
            return self.candidates.index(self.answer)
        except ValueError:
            raise SampleError(
                f"answer {self.answer!r} is not among the candidates {list(self.candidates)} "
                f"of sample {self.id}; fix the annotation"
            ) from None

    def option_letters(self) -> tuple[str, ...]:
        """("A", "B", ...), one letter per option shown; none for open-ended samples (their
        candidates are never shown)."""
        if self.open_ended:
            return ()
        if len(self.candidates) > 26:
            raise SampleError(
                f"sample {self.id} has {len(self.candidates)} options, more than the 26 letters "
                "A–Z that name them; keep at most 26 candidates"
            )
        return tuple(chr(ord("A") + i) for i in range(len(self.candidates)))

    @property
    def answer_letter(self) -> str:
        """The correct option's letter; "" for open-ended samples."""
        return self.option_letters()[self.answer_index()] if not self.open_ended else ""
