"""One multiple-choice video QA sample, as every dataset reader produces it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class SampleError(Exception):
    """A problem with one sample (missing or corrupt video, bad annotation).

    The runner records the sample as failed with `str(err)` as the reason and goes on.
    """


@dataclass(frozen=True)
class Sample:
    id: str  # unique in the dataset, e.g. "Moving Direction/0007"
    task: str
    video: Path
    question: str  # without options
    candidates: tuple[str, ...]
    answer: str  # the correct candidate's text
    bound: tuple[float, float] | None = None  # start/end seconds

    def option_letters(self) -> tuple[str, ...]:
        return tuple(chr(ord("A") + i) for i in range(len(self.candidates)))

    def answer_index(self) -> int:
        try:
            return self.candidates.index(self.answer)
        except ValueError:
            raise SampleError(
                f"answer {self.answer!r} is not among the candidates {list(self.candidates)} "
                f"of sample {self.id}; fix the annotation"
            ) from None
