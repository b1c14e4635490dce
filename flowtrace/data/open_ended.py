"""TVBench asked open-ended, as the reference code's `tvbench_open_ended` dataset asks it.

No options are shown. The assistant's reply starts with a per-task answer prompt ("\nThe number
of moving objects is"), the answer becomes the short word(s) that should follow it, and the
candidates become the short answers the reference compares first tokens against. Tasks without a
rule keep their question and answer, with no answer prompt and no candidates.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from flowtrace.data.sample import Sample

_ANTONYM_OBJECTS = ("jacket", "shoe", "bag", "headphone", "hat/cap", "glasses")
_COLOURS = ("cyan", "green", "blue", "gray", "purple", "yellow", "brown", "red")
_SHAPES = ("sphere", "cylinder", "cube")
# Colour-major, as the reference lists them: the first one found in the question names the object.
_MOVING_OBJECTS = tuple(f"the {c} {s}" for c in _COLOURS for s in _SHAPES)
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_LOCALIZATION = ("Throughout", "beginning", "middle", "end")
_SCENE_QUESTION = "Where does the scene in the video change from one place to another place?"


class OpenEndedError(ValueError):
    """The entry does not have what its task's open-ended rule needs."""


def _antonym(s: Sample) -> Sample:
    found = next((o for o in _ANTONYM_OBJECTS if o in s.answer), None)
    about = f" regarding the {found}" if found else ""
    return _lower(s, f"\nThe action being performed in the video{about} is to")


def _sequence(s: Sample) -> Sample:
    return _lower(s, "\nThe action the person is doing first is to")


def _lower(s: Sample, prompt: str) -> Sample:
    return _open(s, prompt, s.answer.lower(), tuple(c.lower() for c in s.candidates))


def _localization(s: Sample) -> Sample:
    match = re.search(r"action '(.*?)'", s.question)
    if match is None:
        raise OpenEndedError("has no action '…' in its question")
    # The first of the four words found in the answer; as in the reference, "end" when none is.
    word = next((w for w in _LOCALIZATION if w in s.answer), _LOCALIZATION[-1])
    prompt = f"\nThe action '{match.group(1)}' occurs at the"
    return _open(s, prompt, word.lower(), tuple(w.lower() for w in _LOCALIZATION))


def _direction(s: Sample) -> Sample:
    thing = next((o for o in _MOVING_OBJECTS if o in s.question), "the object")
    answer = "right" if "right" in s.answer else "left"
    return _open(s, f"\n{thing[:1].upper()}{thing[1:]} moves to the", answer, ("left", "right"))


def _count(s: Sample) -> Sample:
    def word(digit: str) -> str:
        if not (len(digit) == 1 and digit.isdigit()):
            raise OpenEndedError(f"has {digit!r} where Object Count needs one digit")
        return _NUMBER_WORDS[int(digit)]

    candidates = tuple(word(c) for c in s.candidates)
    return _open(s, "\nThe number of moving objects is", word(s.answer), candidates)


def _scene(s: Sample) -> Sample:
    def place(text: str) -> str:
        text = text.lower()
        # The reference drops the article with str.replace, every occurrence of it included.
        for prefix in ("from the ", "from a ", "from "):
            if text.startswith(prefix):
                return text.replace(prefix, "")
        return text

    opened = _open(
        s,
        "\nThe scene in the video changes from the",
        place(s.answer),
        tuple(place(c) for c in s.candidates),
    )
    return dataclasses.replace(opened, question=_SCENE_QUESTION)


def _open(s: Sample, prompt: str, answer: str, candidates: tuple[str, ...]) -> Sample:
    return dataclasses.replace(
        s, style="open", answer_prompt=prompt, answer=answer, candidates=candidates
    )


RULES: dict[str, Callable[[Sample], Sample]] = {
    "Action Antonym": _antonym,
    "Action Sequence": _sequence,
    "Action Localization": _localization,
    "Moving Direction": _direction,
    "Object Count": _count,
    "Scene Transition": _scene,
}


def open_ended_sample(sample: Sample) -> Sample:
    """The multiple-choice TVBench sample asked open-ended (see the module docstring)."""
    rule = RULES.get(sample.task)
    if rule is None:
        return dataclasses.replace(sample, style="open", candidates=())
    try:
        return rule(sample)
    except OpenEndedError as err:
        problem = f"{err} (open-ended {sample.task})"
        return dataclasses.replace(sample, style="open", problem=problem)
