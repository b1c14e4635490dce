"""What each recipe kind measures per sample, as plain arrays in that sample's record.

A measure declares its `schema` (variables and dims), says per sample which knockouts it needs
(`plan`: the pass batches them with other recipes' through one engine call) and records the rows
that come back, or its own reads of the model (`fill`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowtrace.cube import CLEAN_VARIABLES, SampleRecord, Schema, Variable
from flowtrace.data import Sample, SampleError
from flowtrace.edge_share import causal_pairs, kept_shares
from flowtrace.edges import blocked_edges
from flowtrace.engine import KnockoutCondition, ReferenceEngine
from flowtrace.models import LoadedModel, Prepared
from flowtrace.recipe import (
    AttentionMap,
    EffectivePathway,
    Knockout,
    LayerProbe,
    VideoLogitLens,
    counted_edges,
    random_plan,
)
from flowtrace.sweep import Sweep

LENSES = ("norm", "raw")  # logit lens with the final norm (as the model does) and without


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


class KnockoutMeasure:
    """Probabilities of the clean answer and the true letter under each knockout and window."""

    def __init__(self, recipe: Knockout, loaded: LoadedModel, sweep: Sweep) -> None:
        """`sweep`: where each knockout cuts (its window, positions and heads); each head alone
        (`sweep.per_head`) gives the cube a `head` dim."""
        self.recipe, self.loaded = recipe, loaded
        self.sweep, self.per_head = sweep, sweep.per_head
        self.generate = recipe.generate
        labels = recipe.labels()
        self.sources = list(dict.fromkeys(s for s, _ in labels))
        self.targets = list(dict.fromkeys(t for _, t in labels))
        self.decode = Decoder(loaded)
        head = ("head",) if self.per_head else ()
        dims = ("layer", *head, "source", "target")
        coords: dict[str, Sequence[object]] = {
            "layer": np.arange(loaded.num_layers),
            "source": self.sources,
            "target": self.targets,
        }
        if self.per_head:
            coords["head"] = np.arange(loaded.num_heads)
        variables = {**CLEAN_VARIABLES, **answer_variables(dims)}
        if self.generate:
            variables["clean_text"] = Variable((), "str", "")
            variables["new_text"] = Variable(dims, "str", "")
        # Missing (NaN) where the sample was not analysed: 0 would read as "nothing cut".
        variables["blocked_edges"] = Variable(("source", "target"), "float64", np.nan)
        self.schema = Schema(variables, coords)

    def plan(
        self, prepared: Prepared, sample: Sample, clean: Clean, engine: ReferenceEngine
    ) -> Plan:
        layout = prepared.layout
        absent = [] if self.recipe.skip_absent else self.recipe.absent_groups(layout)
        if absent:
            why = " (an open-ended prompt shows no options)" if not layout.option_letters else ""
            raise SampleError(
                f"this sample's prompt has no group {', '.join(absent)}, which the recipe's "
                f"edges name{why}"
            )
        conditions = self.recipe.conditions(
            layout, self.loaded.num_layers, self.sweep, self.loaded.num_heads
        )
        # Replies run their own batched generation; first-token knockouts join the pass's batch.
        knockouts = [] if self.generate else [c.knockout for c in conditions]
        return Plan(knockouts, conditions, fill_runs_model=bool(self.generate))

    def fill(self, step: Step) -> None:
        record, probs = step.record, step.probs
        conditions = step.plan.context
        if not conditions:
            return
        if self.generate:
            # The clean reply comes first, as one more row of the same batched generation.
            probs, ids = step.engine.generate(
                step.prepared.inputs,
                [KnockoutCondition({}), *(c.knockout for c in conditions)],
                self.generate,
                self.loaded.stop_ids(),
            )
            texts = [self.loaded.reply(row) for row in ids.tolist()]
            record.values["clean_text"][()] = texts.pop(0)
            probs = probs[1:]
        sources = [self.sources.index(c.source) for c in conditions]
        targets = [self.targets.index(c.target) for c in conditions]
        layers = [c.layer for c in conditions]
        head = ([c.heads[0] for c in conditions],) if self.per_head else ()
        at = (layers, *head, sources, targets)
        record_answers(record, at, probs, step.clean, self.decode)
        if self.generate:
            record.values["new_text"][at] = np.asarray(texts, dtype=object)
        record.values["blocked_edges"][sources, targets] = [c.edges for c in conditions]


class _ReadsCleanPass:
    """Measures that ask no knockout of the pass: they run their own reads in `fill`."""

    def plan(
        self, prepared: Prepared, sample: Sample, clean: Clean, engine: ReferenceEngine
    ) -> Plan:
        return Plan()


class ProbeMeasure(_ReadsCleanPass):
    """Logit lens at the last token: option-letter probabilities and top-k tokens per layer."""

    def __init__(self, recipe: LayerProbe, loaded: LoadedModel, num_options: int) -> None:
        self.recipe, self.loaded = recipe, loaded
        self.letters = [chr(ord("A") + i) for i in range(num_options)]
        self.decode = Decoder(loaded)
        lens = ("layer", "lens")
        self.schema = Schema(
            {
                **CLEAN_VARIABLES,
                "prob_option": Variable((*lens, "option"), "float32", np.nan),
                "prob_true": Variable(lens, "float32", np.nan),
                "prob_false": Variable(lens, "float32", np.nan),
                "top_token": Variable((*lens, "k"), "str", ""),
                "top_prob": Variable((*lens, "k"), "float32", np.nan),
            },
            {
                "layer": np.arange(loaded.num_layers),
                "lens": LENSES,
                "option": self.letters,
                "k": np.arange(recipe.top_k),
            },
        )

    def fill(self, step: Step) -> None:
        engine, prepared, record = step.engine, step.prepared, step.record
        layout, values = prepared.layout, record.values
        ids = torch.tensor([self.loaded.letter_id(x) for x in layout.option_letters])
        is_true = torch.tensor([x == layout.true_letter for x in layout.option_letters])
        states = engine.states(prepared.inputs, [-1])[:, 0]  # one forward for both lenses
        for lens_index, lens in enumerate(LENSES):
            lensed = engine.unembed(states, norm=lens == "norm").cpu()  # (layers, V)
            options = lensed[:, ids]
            values["prob_option"][:, lens_index, : len(ids)] = options.numpy()
            values["prob_true"][:, lens_index] = options[:, is_true].sum(-1).numpy()
            values["prob_false"][:, lens_index] = options[:, ~is_true].mean(-1).numpy()
            top = lensed.topk(self.recipe.top_k, dim=-1)
            values["top_prob"][:, lens_index] = top.values.numpy()
            words = [[self.decode(int(t)) for t in row] for row in top.indices]
            values["top_token"][:, lens_index] = np.asarray(words, dtype=object)


EDGE_MEASURES = (
    "edges_kept_pct: % of causal (query, key) pairs from the first video token on kept, over "
    "all layers (flowtrace's count); paper_kept_pct: % of all causal pairs kept, T(T+1)/2 per "
    "layer with the system prompt (the reference code's attention_amount); over samples the "
    "paper pools kept pairs over attention_pairs (flowtrace.edge_share.pooled)"
)


class PathwayMeasure:
    """The answer with only the effective pathways kept, and with random cuts of equal budget."""

    CONDITIONS = ("pathway", "random")

    def __init__(self, recipe: EffectivePathway, loaded: LoadedModel, seed: int) -> None:
        # A recipe may name the pathway each model keeps (found pathways of the embedded toys).
        self.recipe, self.loaded, self.seed = recipe.for_model(loaded.model_id), loaded, seed
        self.decode = Decoder(loaded)
        dims = ("condition",)
        self.schema = Schema(
            {
                **CLEAN_VARIABLES,
                **answer_variables(dims),
                # Two shares of edges kept (flowtrace.edge_share): flowtrace's, from the first
                # video token on, and the paper's over all causal pairs (its attention_amount),
                # with that denominator so shares pool over samples as the reference pools them.
                "edges_kept_pct": Variable(dims, "float32", np.nan),
                "paper_kept_pct": Variable(dims, "float32", np.nan),
                "attention_pairs": Variable((), "float64", np.nan),
            },
            {"condition": self.CONDITIONS},
        )
        self.attrs = {"edges_kept_measures": EDGE_MEASURES}

    def plan(
        self, prepared: Prepared, sample: Sample, clean: Clean, engine: ReferenceEngine
    ) -> Plan:
        layout, layers = prepared.layout, self.loaded.num_layers
        counted = counted_edges(layout)
        pathway = self.recipe.plan(layout, layers)
        if self.recipe.random_ratio is None:
            budget = {layer: int((cut & counted).sum()) for layer, cut in pathway.items()}
        else:
            n = int(self.recipe.random_ratio * int(counted.sum()))
            budget = dict.fromkeys(range(layers), n)
        # Seeded by the run seed and the sample, so a rerun draws the same random cuts.
        seed = zlib.crc32(f"{self.seed}/{sample.id}".encode())
        random = random_plan(counted, budget, torch.Generator().manual_seed(seed))
        plans = (pathway, random)
        kept = [kept_shares(plan, counted, layers) for plan in plans]
        return Plan([KnockoutCondition(p) for p in plans], kept, fill_runs_model=False)

    def fill(self, step: Step) -> None:
        clean, record, plan, probs = step.clean, step.record, step.plan, step.probs
        at = (np.arange(len(self.CONDITIONS)),)
        record_answers(record, at, probs, clean, self.decode)
        ours, paper = zip(*plan.context, strict=True)
        record.values["edges_kept_pct"][:] = ours
        record.values["paper_kept_pct"][:] = paper
        pairs = causal_pairs(step.prepared.layout.seq_len) * self.loaded.num_layers
        record.values["attention_pairs"][()] = pairs


class VideoLensMeasure(_ReadsCleanPass):
    """Top-k tokens of the logit lens (with the final norm) at every video token and layer."""

    def __init__(self, recipe: VideoLogitLens, loaded: LoadedModel, grid: tuple[int, int, int]):
        self.recipe, self.loaded, self.grid = recipe, loaded, grid
        self.decode = Decoder(loaded)
        frames, height, width = grid
        dims = ("layer", "frame", "h", "w", "k")
        self.schema = Schema(
            {
                **CLEAN_VARIABLES,
                "top_token": Variable(dims, "str", ""),
                "top_prob": Variable(dims, "float32", np.nan),
            },
            {
                "layer": np.arange(loaded.num_layers),
                "frame": np.arange(frames),
                "h": np.arange(height),
                "w": np.arange(width),
                "k": np.arange(recipe.top_k),
            },
        )

    def fill(self, step: Step) -> None:
        engine, prepared, record = step.engine, step.prepared, step.record
        positions = prepared.layout.video_positions()  # (T, H, W)
        if positions.shape != self.grid:
            raise SampleError(
                f"this video's token grid {'x'.join(map(str, positions.shape))} differs from the "
                f"run's {'x'.join(map(str, self.grid))} (the model keeps each video's aspect "
                "ratio, and one store holds one grid); analyse videos of one shape per run"
            )
        lensed = engine.logit_lens(prepared.inputs, norm=True, positions=positions.ravel().tolist())
        top = lensed.topk(self.recipe.top_k, dim=-1)  # (layers, T·H·W, k)
        shape = (self.loaded.num_layers, *positions.shape, self.recipe.top_k)
        ids = top.indices.cpu().numpy()
        unique, inverse = np.unique(ids, return_inverse=True)
        words = np.asarray([self.decode(int(t)) for t in unique], dtype=object)
        record.values["top_token"][...] = words[inverse].reshape(shape)
        record.values["top_prob"][...] = top.values.reshape(shape).cpu().numpy()


class AttentionMeasure(_ReadsCleanPass):
    """Group-to-group attention mass per layer and head, clean and with the recipe's cut."""

    CONDITIONS = ("clean", "blocked")

    def __init__(self, recipe: AttentionMap, loaded: LoadedModel, names: list[str]) -> None:
        self.recipe, self.loaded, self.names = recipe, loaded, names
        heads = loaded.model.config.get_text_config().num_attention_heads
        self.schema = Schema(
            {
                **CLEAN_VARIABLES,
                "attention": Variable(
                    ("condition", "layer", "head", "target", "source"), "float32", np.nan
                ),
            },
            {
                "condition": self.CONDITIONS,
                "layer": np.arange(loaded.num_layers),
                "head": np.arange(heads),
                "target": names,
                "source": names,
            },
        )

    def fill(self, step: Step) -> None:
        engine, prepared, record = step.engine, step.prepared, step.record
        layout = prepared.layout
        groups = torch.zeros(len(self.names), layout.seq_len)
        for i, name in enumerate(self.names):
            groups[i, layout[name]] = 1.0
        cut = torch.from_numpy(blocked_edges(self.recipe.blocked, layout))
        conditions = [
            KnockoutCondition({}),
            KnockoutCondition.window(cut, range(self.loaded.num_layers)),
        ]
        mass = engine.attention_mass(prepared.inputs, groups, conditions)
        record.values["attention"][...] = mass.cpu().numpy()


Measure = KnockoutMeasure | ProbeMeasure | PathwayMeasure | VideoLensMeasure | AttentionMeasure
