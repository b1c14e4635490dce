"""Recipes as trace programs: a function that runs its own nnsight traces on one sample.

A recipe file may define its analysis as a function of a `Trace` (the sample's inputs, its token
groups by name, the nnsight model, the clean answer) that returns named arrays with named dims:

    def patch_effect(t: Trace):
        ...
        with t.model.trace(**t.inputs):
            ...
            p = t.model.output.logits[0, -1].softmax(-1)[t.answer_id].save()
        return {"p_answer": (("layer", "group"), values)}

    recipe = TraceProgram("my_analysis", "What my analysis shows", patch_effect)

The runner gives it what the built-in kinds get: data, sample modes, prefetch, a store with
resume and provenance, `show`/`query`/`plot` with a figure chosen from the dims.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from flowtrace.cube import CLEAN_VARIABLES, Schema, Variable
from flowtrace.data import Sample, SampleError, sample_frames
from flowtrace.engine import ReferenceEngine
from flowtrace.layout import TokenLayout
from flowtrace.measure import Plan, Step
from flowtrace.models import LoadedModel, Prepared
from flowtrace.recipe import TraceProgram

__all__ = ["Trace", "TraceProgram", "ProgramMeasure"]


@dataclass
class Trace:
    """One sample as a trace program sees it."""

    sample: Sample
    inputs: dict[str, torch.Tensor]
    layout: TokenLayout
    loaded: LoadedModel
    answer_id: int  # the clean prediction's token
    true_id: int  # the true option's letter (or an open-ended answer's first token)
    clean_probs: torch.Tensor  # (V,) next-token probabilities of the clean pass
    frame_count: int
    seed: int
    engine: ReferenceEngine | None = None  # the pass's engine: its clean capture is reusable
    others: Sequence[Sample] = ()  # the run's other samples, for counterfactuals across videos
    scratch: dict[str, Any] = field(default_factory=dict)  # what a program keeps for this sample

    @property
    def model(self) -> Any:
        """The nnsight model: `with t.model.trace(**t.inputs): …`."""
        return self.loaded.nnsight

    @property
    def layers(self) -> list[Any]:
        """The decoder layers of the nnsight model, in order."""
        return list(self.loaded.layers(self.loaded.nnsight))

    def attention(self, layer: int) -> Any:
        """The attention module of decoder layer `layer` (nnsight)."""
        return self.loaded.attention(self.loaded.nnsight, layer)

    @cached_property
    def frames(self) -> np.ndarray:
        """The sample's decoded frames (T, H, W, 3), as the model saw them."""
        return sample_frames(self.sample, self.frame_count, self.loaded.adapter)

    def prepare(self, frames: np.ndarray) -> Prepared:
        """The same sample with other frames: inputs and layout for a counterfactual."""
        return self.loaded.adapter.prepare(self.loaded, self.sample, frames)

    def other_frames(self) -> np.ndarray:
        """Frames of another video of the run, chosen by the seed and this sample."""
        pool = [s for s in self.others if str(s.video) != str(self.sample.video)]
        if not pool:
            raise SampleError("a counterfactual needs another video, and the data has one only")
        pick = zlib.crc32(f"{self.seed}/{self.sample.id}".encode()) % len(pool)
        return sample_frames(pool[pick], self.frame_count, self.loaded.adapter)

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator seeded by the run seed and this sample: reruns draw the same."""
        return np.random.default_rng(zlib.crc32(f"{self.seed}/{self.sample.id}/{salt}".encode()))


class ProgramMeasure:
    """Runs a trace program per sample; its first sample fixes the arrays' dims and sizes."""

    def __init__(
        self,
        recipe: TraceProgram,
        loaded: LoadedModel,
        frames: int,
        samples: Sequence[Sample],
        seed: int,
    ) -> None:
        self.recipe, self.loaded, self.frames = recipe, loaded, frames
        self.samples, self.seed = list(samples), seed
        # Filled in place by the first sample, so stores holding this schema see it grow.
        self.schema = Schema(
            dict(CLEAN_VARIABLES), {k: list(v) for k, v in recipe.coords.items()}, complete=False
        )

    def plan(self, prepared: Prepared, sample_id: str) -> Plan:
        return Plan()

    def fill(self, step: Step) -> None:
        """Run the program on this sample; its arrays become the record's values. The result may
        label dims with a "coords" entry ({dim: labels}), the same for every sample."""
        prepared, clean, record = step.prepared, step.clean, step.record
        trace = Trace(
            sample=step.sample,
            inputs=prepared.inputs,
            layout=prepared.layout,
            loaded=self.loaded,
            answer_id=clean.pred,
            true_id=clean.true_id,
            clean_probs=clean.probs,
            frame_count=self.frames,
            seed=self.seed,
            engine=step.engine,
            others=self.samples,
        )
        out = self.recipe.program(trace)
        if not isinstance(out, Mapping) or not out:
            raise SampleError(
                f"trace program {self.recipe.name} returned {type(out).__name__}; return a dict "
                '{"name": (("dim", …), array)}'
            )
        out = dict(out)
        for dim, labels in dict(out.pop("coords", {})).items():
            labels = [str(x) if isinstance(x, str) else x for x in labels]
            known = self.schema.coords.get(dim)
            if known is None or not self.schema.complete:
                self.schema.coords[dim] = labels
            elif list(known) != labels:
                raise SampleError(
                    f"trace program {self.recipe.name}: dim {dim} is labelled {labels} for this "
                    f"sample, {list(known)} for the first; labels must not change"
                )
        for name, value in out.items():
            dims, array = _parts(self.recipe.name, name, value)
            self._declare(name, dims, array)
            variable = self.schema.variables[name]
            if array.shape != self.schema.shape(name):
                raise SampleError(
                    f"trace program {self.recipe.name}: {name} has shape {array.shape} for this "
                    f"sample, {self.schema.shape(name)} for the first; every sample must give "
                    "the same sizes"
                )
            record.values[name] = array.astype(
                object if variable.dtype == "str" else variable.dtype
            )
        self.schema.complete = True
        record.schema = self.schema

    def _declare(self, name: str, dims: tuple[str, ...], array: np.ndarray) -> None:
        known = self.schema.variables.get(name)
        if known is not None:
            if known.dims != dims:
                raise SampleError(
                    f"trace program {self.recipe.name}: {name} has dims {dims}, the first sample "
                    f"gave {known.dims}"
                )
            return
        for dim, size in zip(dims, array.shape, strict=True):
            labels = self.schema.coords.get(dim)
            if labels is None:  # numbered (a `layer` dim: the layer numbers)
                self.schema.coords[dim] = list(range(size))
            elif len(labels) != size:
                raise SampleError(
                    f"trace program {self.recipe.name}: {name}'s dim {dim} has {size} entries "
                    f"but the recipe's coords name {len(labels)}"
                )
        kind = array.dtype.kind
        if kind == "b":
            variable = Variable(dims, "bool", False)
        elif kind in "iu":
            variable = Variable(dims, "int64", -1)
        elif kind in "USO":
            variable = Variable(dims, "str", "")
        else:
            variable = Variable(dims, "float32", np.nan)
        self.schema.variables[name] = variable


def _parts(program: str, name: str, value: object) -> tuple[tuple[str, ...], np.ndarray]:
    try:
        dims, array = value  # type: ignore[misc]
        dims = (dims,) if isinstance(dims, str) else tuple(dims)
    except (TypeError, ValueError):
        raise SampleError(
            f"trace program {program}: {name} must be ((dim, …), array), got {type(value).__name__}"
        ) from None
    if isinstance(array, torch.Tensor):
        array = array.detach().float().cpu().numpy() if array.is_floating_point() else array.cpu()
    array = np.asarray(array)
    if array.ndim != len(dims):
        raise SampleError(
            f"trace program {program}: {name} has {array.ndim} dims but names {len(dims)} {dims}"
        )
    if "sample" in dims:
        raise SampleError(f"trace program {program}: {name}: the runner adds the sample dim")
    return dims, array
