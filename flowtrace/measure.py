"""What each recipe kind measures per sample, written into that sample's slice of the cube."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from flowtrace.data import Sample, SampleError
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
        return self.is_correct(self.pred, self.text)

    def is_correct(self, token_id: int, text: str) -> bool:
        """A letter is right whatever the spacing of its token (the reference compares words);
        an open-ended answer is right when its first token is the reference answer's."""
        if self.letter:
            return text.strip().lower() == self.letter.lower()
        return token_id == self.true_id


def sample_cube(sample: Sample) -> xr.Dataset:
    """One sample's coordinates (task, video, question, …) and its clean-pass slots."""
    try:
        answer_letter = sample.answer_letter
    except SampleError:  # the sample fails validation with this reason
        answer_letter = ""

    def per_sample(value: object) -> tuple[str, np.ndarray]:
        return ("sample", np.asarray([value], dtype=object if isinstance(value, str) else None))

    return xr.Dataset(
        {
            "clean_prob_pred": ("sample", np.full(1, np.nan, dtype=np.float32)),
            "clean_prob_true": ("sample", np.full(1, np.nan, dtype=np.float32)),
        },
        coords={
            "sample": np.asarray([sample.id], dtype=object),
            "task": per_sample(sample.task),
            "video": per_sample(str(sample.video)),
            "question": per_sample(sample.question),
            "candidates": per_sample(json.dumps(list(sample.candidates))),
            "answer": per_sample(sample.answer),
            "answer_letter": per_sample(answer_letter),
            "clean_pred": per_sample(""),
            "clean_correct": ("sample", np.zeros(1, dtype=bool)),
            "status": per_sample("failed"),
            "engine": per_sample(""),  # the knockout path that ran: fast, reference or both
            "reason": per_sample(""),
        },
    )


def measure_clean(
    loaded: LoadedModel,
    engine: ReferenceEngine,
    prepared: Prepared,
    sample: Sample,
    cube: xr.Dataset,
) -> Clean:
    probs = engine.clean(prepared.inputs)
    pred = int(probs.argmax())
    letter = prepared.layout.true_letter
    if sample.open_ended:
        true_id = loaded.continuation_id(prepared.prompt, sample.answer)
    else:
        true_id = loaded.letter_id(letter)
    clean = Clean(probs, pred, true_id, letter, loaded.decode(pred))
    cube.coords["clean_pred"][:] = clean.text
    cube.coords["clean_correct"][:] = clean.correct
    cube["clean_prob_pred"][:] = float(probs[pred])
    cube["clean_prob_true"][:] = float(probs[true_id])
    return clean


def answer_variables(dims: tuple[str, ...], shape: tuple[int, ...]) -> dict:
    """Slots for the answer under an intervention: probabilities, relative change, new argmax."""
    nan = np.full(shape, np.nan, dtype=np.float32)
    return {
        "prob_pred": (dims, nan.copy()),
        "prob_true": (dims, nan.copy()),
        "rel_change_pred": (dims, nan.copy()),
        "rel_change_true": (dims, nan.copy()),
        "new_pred": (dims, np.full(shape, "", dtype=object)),
        "correct": (dims, np.zeros(shape, dtype=bool)),
    }


def record_answer(
    cube: xr.Dataset, at: dict, probs: torch.Tensor, clean: Clean, loaded: LoadedModel
) -> None:
    """Fill the answer slots at `at` from next-token probabilities under an intervention."""
    new_id = int(probs.argmax())
    new_text = loaded.decode(new_id)
    p_pred, p_true = float(clean.probs[clean.pred]), float(clean.probs[clean.true_id])
    new_pred, new_true = float(probs[clean.pred]), float(probs[clean.true_id])
    cube["prob_pred"][at] = new_pred
    cube["prob_true"][at] = new_true
    cube["rel_change_pred"][at] = 100 * (new_pred - p_pred) / p_pred
    cube["rel_change_true"][at] = 100 * (new_true - p_true) / p_true
    cube["new_pred"][at] = new_text
    cube["correct"][at] = clean.is_correct(new_id, new_text)


class KnockoutMeasure:
    """Probabilities of the clean answer and the true letter under each knockout and window."""

    def __init__(
        self,
        recipe: Knockout,
        loaded: LoadedModel,
        window: int,
        style: str,
        sweep: tuple[int, int] | None,
        heads: Sequence[int] | str | None = None,
    ) -> None:
        """`heads`: None cuts in every head, a list cuts in those heads together, "sweep" cuts in
        each head alone (the cube gains a `head` dim)."""
        self.recipe, self.loaded = recipe, loaded
        self.window, self.style, self.sweep = window, style, sweep
        self.per_head = heads == "sweep"
        if self.per_head:
            self.heads: list[Sequence[int] | None] = [(h,) for h in range(loaded.num_heads)]
        else:
            self.heads = [None if heads is None else tuple(heads)]
        self.generate = recipe.generate
        labels = recipe.labels()
        self.sources = list(dict.fromkeys(s for s, _ in labels))
        self.targets = list(dict.fromkeys(t for _, t in labels))

    def empty(self, cube: xr.Dataset) -> xr.Dataset:
        head = ("head",) if self.per_head else ()
        dims = ("sample", "layer", *head, "source", "target")
        sizes = {"layer": self.loaded.num_layers, "head": len(self.heads)}
        shape = (1, *(sizes[d] for d in dims[1:-2]), len(self.sources), len(self.targets))
        edges = np.zeros((1, len(self.sources), len(self.targets)), dtype=np.int64)
        coords = {
            "layer": np.arange(self.loaded.num_layers),
            "source": np.asarray(self.sources, dtype=object),
            "target": np.asarray(self.targets, dtype=object),
        }
        if self.per_head:
            coords["head"] = np.arange(len(self.heads))
        replies = {}
        if self.generate:
            replies = {
                "clean_text": ("sample", np.full(1, "", dtype=object)),
                "new_text": (dims, np.full(shape, "", dtype=object)),
            }
        return cube.assign(
            {
                **answer_variables(dims, shape),
                **replies,
                "blocked_edges": (("sample", "source", "target"), edges),
            }
        ).assign_coords(coords)

    def fill(
        self, engine: ReferenceEngine, prepared: Prepared, clean: Clean, cube: xr.Dataset
    ) -> None:
        layout = prepared.layout
        absent = [] if self.recipe.skip_absent else self.recipe.absent_groups(layout)
        if absent:
            why = " (an open-ended prompt shows no options)" if not layout.option_letters else ""
            raise SampleError(
                f"this sample's prompt has no group {', '.join(absent)}, which the recipe's "
                f"edges name{why}"
            )
        conditions = self.recipe.conditions(
            layout, self.loaded.num_layers, self.window, self.style, self.sweep, self.heads
        )
        knockouts = [c.knockout for c in conditions]
        texts: list[str] = []
        if self.generate:
            # The clean reply comes first, as one more row of the same batched generation.
            probs, ids = engine.generate(
                prepared.inputs,
                [KnockoutCondition({}), *knockouts],
                self.generate,
                self.loaded.stop_ids(),
            )
            texts = [self.loaded.reply(row) for row in ids.tolist()]
            cube["clean_text"][0] = texts.pop(0)
            probs = probs[1:]
        else:
            probs = engine.knockout(prepared.inputs, knockouts)
        for index, (condition, row) in enumerate(zip(conditions, probs, strict=True)):
            pair = {
                "source": self.sources.index(condition.source),
                "target": self.targets.index(condition.target),
            }
            at = {"sample": 0, "layer": condition.layer, **pair}
            if self.per_head:
                at["head"] = condition.heads[0]
            record_answer(cube, at, row, clean, self.loaded)
            if texts:
                cube["new_text"][at] = texts[index]
            cube["blocked_edges"][{"sample": 0, **pair}] = condition.edges


class ProbeMeasure:
    """Logit lens at the last token: option-letter probabilities and top-k tokens per layer."""

    def __init__(self, recipe: LayerProbe, loaded: LoadedModel, num_options: int) -> None:
        self.recipe, self.loaded = recipe, loaded
        self.letters = [chr(ord("A") + i) for i in range(num_options)]

    def empty(self, cube: xr.Dataset) -> xr.Dataset:
        layers, k = self.loaded.num_layers, self.recipe.top_k
        nan = np.full((1, layers, len(LENSES)), np.nan, dtype=np.float32)
        return cube.assign(
            {
                "prob_option": (
                    ("sample", "layer", "lens", "option"),
                    np.full((1, layers, len(LENSES), len(self.letters)), np.nan, np.float32),
                ),
                "prob_true": (("sample", "layer", "lens"), nan.copy()),
                "prob_false": (("sample", "layer", "lens"), nan.copy()),
                "top_token": (
                    ("sample", "layer", "lens", "k"),
                    np.full((1, layers, len(LENSES), k), "", dtype=object),
                ),
                "top_prob": (
                    ("sample", "layer", "lens", "k"),
                    np.full((1, layers, len(LENSES), k), np.nan, np.float32),
                ),
            }
        ).assign_coords(
            layer=np.arange(layers),
            lens=np.asarray(LENSES, dtype=object),
            option=np.asarray(self.letters, dtype=object),
            k=np.arange(k),
        )

    def fill(
        self, engine: ReferenceEngine, prepared: Prepared, clean: Clean, cube: xr.Dataset
    ) -> None:
        layout = prepared.layout
        ids = torch.tensor([self.loaded.letter_id(x) for x in layout.option_letters])
        is_true = torch.tensor([x == layout.true_letter for x in layout.option_letters])
        states = engine.states(prepared.inputs, [-1])[:, 0]  # one forward for both lenses
        for lens_index, lens in enumerate(LENSES):
            probs = engine.unembed(states, norm=lens == "norm")  # (layers, V)
            options = probs[:, ids]
            cube["prob_option"][0, :, lens_index, : len(ids)] = options.numpy()
            cube["prob_true"][0, :, lens_index] = options[:, is_true].sum(-1).numpy()
            cube["prob_false"][0, :, lens_index] = options[:, ~is_true].mean(-1).numpy()
            top = probs.topk(self.recipe.top_k, dim=-1)
            cube["top_prob"][0, :, lens_index] = top.values.numpy()
            words = [[self.loaded.decode(int(t)) for t in row] for row in top.indices]
            cube["top_token"][0, :, lens_index] = np.asarray(words, dtype=object)


class PathwayMeasure:
    """The answer with only the effective pathways kept, and with random cuts of equal budget."""

    CONDITIONS = ("pathway", "random")

    def __init__(self, recipe: EffectivePathway, loaded: LoadedModel, seed: int) -> None:
        self.recipe, self.loaded, self.seed = recipe, loaded, seed

    def empty(self, cube: xr.Dataset) -> xr.Dataset:
        dims, shape = ("sample", "condition"), (1, len(self.CONDITIONS))
        kept = np.full(shape, np.nan, dtype=np.float32)
        return cube.assign(
            {**answer_variables(dims, shape), "edges_kept_pct": (dims, kept)}
        ).assign_coords(condition=np.asarray(self.CONDITIONS, dtype=object))

    def fill(
        self, engine: ReferenceEngine, prepared: Prepared, clean: Clean, cube: xr.Dataset
    ) -> None:
        layout, layers = prepared.layout, self.loaded.num_layers
        counted = counted_edges(layout)
        total = int(counted.sum()) * layers
        pathway = self.recipe.plan(layout, layers)
        if self.recipe.random_ratio is None:
            budget = {layer: int((cut & counted).sum()) for layer, cut in pathway.items()}
        else:
            n = int(self.recipe.random_ratio * int(counted.sum()))
            budget = dict.fromkeys(range(layers), n)
        # Seeded by the run seed and the sample, so a rerun draws the same random cuts.
        seed = zlib.crc32(f"{self.seed}/{cube['sample'].values[0]}".encode())
        random = random_plan(counted, budget, torch.Generator().manual_seed(seed))
        plans = (pathway, random)
        probs = engine.knockout(prepared.inputs, [KnockoutCondition(p) for p in plans])
        for index, (plan, row) in enumerate(zip(plans, probs, strict=True)):
            at = {"sample": 0, "condition": index}
            cut = sum(int((blocked & counted).sum()) for blocked in plan.values())
            record_answer(cube, at, row, clean, self.loaded)
            cube["edges_kept_pct"][at] = 100 * (1 - cut / total)


class VideoLensMeasure:
    """Top-k tokens of the logit lens (with the final norm) at every video token and layer."""

    def __init__(self, recipe: VideoLogitLens, loaded: LoadedModel, grid: tuple[int, int, int]):
        self.recipe, self.loaded, self.grid = recipe, loaded, grid

    def empty(self, cube: xr.Dataset) -> xr.Dataset:
        frames, height, width = self.grid
        dims = ("sample", "layer", "frame", "h", "w", "k")
        shape = (1, self.loaded.num_layers, frames, height, width, self.recipe.top_k)
        return cube.assign(
            {
                "top_token": (dims, np.full(shape, "", dtype=object)),
                "top_prob": (dims, np.full(shape, np.nan, dtype=np.float32)),
            }
        ).assign_coords(
            layer=np.arange(self.loaded.num_layers),
            frame=np.arange(frames),
            h=np.arange(height),
            w=np.arange(width),
            k=np.arange(self.recipe.top_k),
        )

    def fill(
        self, engine: ReferenceEngine, prepared: Prepared, clean: Clean, cube: xr.Dataset
    ) -> None:
        layout = prepared.layout
        positions = layout.video_positions()  # (T, H, W)
        probs = engine.logit_lens(prepared.inputs, norm=True, positions=positions.ravel().tolist())
        top = probs.topk(self.recipe.top_k, dim=-1)  # (layers, T·H·W, k)
        shape = (self.loaded.num_layers, *positions.shape, self.recipe.top_k)
        words = np.asarray(
            [self.loaded.decode(int(t)) for t in top.indices.ravel()], dtype=object
        ).reshape(shape)
        cube["top_token"][0] = words
        cube["top_prob"][0] = top.values.reshape(shape).numpy()


class AttentionMeasure:
    """Group-to-group attention mass per layer and head, clean and with the recipe's cut."""

    CONDITIONS = ("clean", "blocked")

    def __init__(self, recipe: AttentionMap, loaded: LoadedModel, names: list[str]) -> None:
        self.recipe, self.loaded, self.names = recipe, loaded, names

    def empty(self, cube: xr.Dataset) -> xr.Dataset:
        heads = self.loaded.model.config.get_text_config().num_attention_heads
        shape = (1, 2, self.loaded.num_layers, heads, len(self.names), len(self.names))
        dims = ("sample", "condition", "layer", "head", "target", "source")
        return cube.assign(
            {"attention": (dims, np.full(shape, np.nan, dtype=np.float32))}
        ).assign_coords(
            condition=np.asarray(self.CONDITIONS, dtype=object),
            layer=np.arange(self.loaded.num_layers),
            head=np.arange(heads),
            target=np.asarray(self.names, dtype=object),
            source=np.asarray(self.names, dtype=object),
        )

    def fill(
        self, engine: ReferenceEngine, prepared: Prepared, clean: Clean, cube: xr.Dataset
    ) -> None:
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
        cube["attention"][0] = mass.cpu().numpy()
