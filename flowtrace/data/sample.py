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
    """A question about one video with candidates; fields may be empty until validated."""

    id: str  # unique in the dataset, e.g. "Moving Direction/0007"
    task: str  # human task name, e.g. "Moving Direction"
    video: Path  # absolute path of the video file (or frame folder)
    question: str  # without options
    candidates: tuple[str, ...]
    answer: str  # the correct candidate's text
    bound: tuple[float, float] | None = None  # start/end seconds

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
        """("A", "B", ...), one letter per candidate."""
        return tuple(chr(ord("A") + i) for i in range(len(self.candidates)))
