"""What every kind's measure shares: the clean answer, a sample's record, the answer variables
under an intervention, and the plan/step protocol the pass drives (`plan`: the knockouts a
measure asks of the pass's one engine call; `fill`: recording them, or its own reads)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowtrace.data import Sample, SampleError
from flowtrace.engine import KnockoutCondition, ReferenceEngine
from flowtrace.models import LoadedModel, Prepared
from flowtrace.store.cube import SampleRecord, Schema, Variable


@dataclass(frozen=True)
class Clean:
    probs: torch.Tensor  # (V,) at the last token
    pred: int
    true_id: int  # the true option's letter, or the first token of an open-ended reference answer
    letter: str  # the true option's letter; "" for an open-ended sample
    text: str  # the prediction, decoded

    @property
    def correct(self) -> bool:
        return self.is_correct(self.pred, self.text, exact=False)

    def is_correct(self, token_id: int, text: str, exact: bool = True) -> bool:
        """As the reference code scores: the clean answer is right when its text equals the
        letter ignoring case, an answer under knockout when it equals the letter exactly (so a
        knockout that turns the top token into " A" or "a" is wrong, as there). An open-ended
        answer is right when its first token is the reference answer's."""
        if self.letter:
            return text == self.letter if exact else text.lower() == self.letter.lower()
        return token_id == self.true_id


def sample_record(sample: Sample, schema: Schema, root: Path | None = None) -> SampleRecord:
    """One sample's empty row: its coordinates (task, video, question, …) and unmeasured slots.

    With `root`, the video is written relative to it (a shared store names no home folder)."""
    try:
        answer_letter = sample.answer_letter
    except SampleError:  # the sample fails validation with this reason
        answer_letter = ""
    record = schema.empty(sample.id)
    record.coords.update(
        task=sample.task,
        video=_relative(Path(sample.video), root),
        question=sample.question,
        candidates=json.dumps(list(sample.candidates)),
        answer=sample.answer,
        answer_letter=answer_letter,
    )
    return record


def _relative(video: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return video.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:  # outside the root (a symlinked file): keep it as the data names it
            pass
    return str(video)


def measure_clean(
    loaded: LoadedModel, engine: ReferenceEngine, prepared: Prepared, sample: Sample
) -> Clean:
    probs = engine.clean(prepared.inputs)
    if not bool(torch.isfinite(probs).all()):  # argmax of NaN is 0: a silent wrong answer
        raise SampleError(
            "the model's clean pass gave NaN or infinite probabilities: its weights or "
            "config.json hold NaN or inf, or the dtype overflows (try float32); check the "
            "checkpoint against the original"
        )
    pred = int(probs.argmax())
    letter = prepared.layout.true_letter
    if sample.open_ended:
        true_id = loaded.continuation_id(prepared.prompt, sample.answer)
    else:
        true_id = loaded.letter_id(letter)
    return Clean(probs, pred, true_id, letter, loaded.decode(pred))


def record_clean(record: SampleRecord, clean: Clean) -> None:
    record.coords["clean_pred"] = clean.text
    record.coords["clean_correct"] = clean.correct
    record.values["clean_prob_pred"][()] = float(clean.probs[clean.pred])
    record.values["clean_prob_true"][()] = float(clean.probs[clean.true_id])


ANSWER_VARIABLES = ("prob_pred", "prob_true", "rel_change_pred", "rel_change_true")


def answer_variables(dims: tuple[str, ...]) -> dict[str, Variable]:
    """Slots for the answer under an intervention: probabilities, relative change, new argmax."""
    out = {name: Variable(dims, "float32", np.nan) for name in ANSWER_VARIABLES}
    out["new_pred"] = Variable(dims, "str", "")
    out["correct"] = Variable(dims, "bool", False)
    return out


class Decoder:
    """Token texts by id, decoded once per run (a sweep's argmaxes repeat a few ids)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded, self.cache = loaded, {}

    def __call__(self, token_id: int) -> str:
        if token_id not in self.cache:
            self.cache[token_id] = self.loaded.decode(token_id)
        return self.cache[token_id]


def answer_values(probs: torch.Tensor, clean: Clean, decode: Decoder) -> dict[str, np.ndarray]:
    """The answer slots (ANSWER_VARIABLES, `new_pred`, `correct`) for rows of next-token
    probabilities (rows × V, on the model's device), read off in one transfer; float32 as
    stored."""
    picked = torch.stack(
        [probs[:, clean.pred], probs[:, clean.true_id], probs.argmax(-1).to(probs.dtype)]
    )
    new_pred, new_true, new_ids = picked.double().cpu().numpy()
    p_pred, p_true = float(clean.probs[clean.pred]), float(clean.probs[clean.true_id])
    texts = [decode(int(i)) for i in new_ids]
    return {
        "prob_pred": new_pred.astype(np.float32),
        "prob_true": new_true.astype(np.float32),
        "rel_change_pred": (100 * (new_pred - p_pred) / p_pred).astype(np.float32),
        "rel_change_true": (100 * (new_true - p_true) / p_true).astype(np.float32),
        "new_pred": np.asarray(texts, dtype=object),
        "correct": np.asarray(
            [clean.is_correct(int(i), t) for i, t in zip(new_ids, texts, strict=True)], dtype=bool
        ),
    }


def record_answers(
    record: SampleRecord, at: tuple, probs: torch.Tensor, clean: Clean, decode: Decoder
) -> None:
    """Fill the answer slots at the index arrays `at` from rows of next-token probabilities."""
    for name, values in answer_values(probs, clean, decode).items():
        record.values[name][at] = values


@dataclass
class Step:
    """One sample at a measure's `fill`: the sample, the engine that ran it, its inputs, the
    clean answer, the record to fill, the measure's plan, and the rows its knockouts gave back."""

    sample: Sample
    engine: ReferenceEngine
    prepared: Prepared
    clean: Clean
    record: SampleRecord
    plan: Plan
    probs: torch.Tensor | None


@dataclass
class Plan:
    """The knockouts a measure asks of the engine for one sample (batched with other recipes'
    in one pass), and what it needs to record their rows."""

    knockouts: list[KnockoutCondition] = field(default_factory=list)
    context: Any = None
    # Whether `fill` runs the model itself (its own reads, replies): then the sample is finished
    # before the next one's clean pass, which would take the engine's state.
    fill_runs_model: bool = True


class ReadsCleanPass:
    """Measures that ask no knockout of the pass: they run their own reads in `fill`."""

    def plan(
        self, prepared: Prepared, sample: Sample, clean: Clean, engine: ReferenceEngine
    ) -> Plan:
        return Plan()
