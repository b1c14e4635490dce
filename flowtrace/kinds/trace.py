"""One sample as a trace program sees it (`Trace`): its inputs and token groups, the model, the
intervention vocabulary run through the pass's engine, reads, and counterfactual inputs.
`flowtrace.program` is its public name."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
import xarray as xr

from flowtrace.data import Sample, SampleError, sample_frames
from flowtrace.engine import FastEngine, ReferenceEngine
from flowtrace.engine.reads import Run, capture_run, group_attention_mass
from flowtrace.interventions import (
    Condition,
    Grid,
    Outcome,
    as_conditions,
    compile_condition,
    grid,
)
from flowtrace.kinds.common import Clean, Decoder, answer_values
from flowtrace.models import LoadedModel, Prepared
from flowtrace.tokens.edges import blocked_edges
from flowtrace.tokens.layout import TokenLayout
from flowtrace.tokens.sweep import Sweep

# Donor videos a mean ablation averages over (the same prompt over other videos of the data).
MEAN_DONORS = 4


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
    # Every sample of the data (all tasks, no limit): donors for counterfactuals across videos
    # are drawn from it, so a sample's donor is the same whatever --limit or --task.
    others: Sequence[Sample] = ()
    scratch: dict[str, Any] = field(default_factory=dict)  # what a program keeps for this sample
    sweep: Sweep = Sweep()  # the run's layer sweep: windows of `window(layer)`

    # -- the model -----------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The nnsight model: `with t.model.trace(**t.inputs): …`."""
        return self.loaded.nnsight

    @property
    def layers(self) -> list[Any]:
        """The decoder layers of the nnsight model, in order."""
        return list(self.loaded.layers(self.loaded.nnsight))

    @property
    def num_layers(self) -> int:
        return self.loaded.num_layers

    def attention(self, layer: int) -> Any:
        """The attention module of decoder layer `layer` (nnsight)."""
        return self.loaded.attention(self.loaded.nnsight, layer)

    @property
    def frame_groups(self) -> list[str]:
        """`frame_0`, `frame_1`, … in order."""
        return [f"frame_{i}" for i in range(self.layout.num_frames)]

    # -- interventions -------------------------------------------------------------------------

    grid = staticmethod(grid)

    def run(self, conditions: Grid | Sequence[Condition] | Condition) -> Outcome:
        """Next-token probabilities under each condition (an intervention, or a tuple of them
        applied together), as one engine call: batched, only what each changes recomputed, the
        shortcut checked against full forwards. A program may instead `yield` the conditions
        (`out = yield grid`): they then join the pass's batch with other recipes' knockouts."""
        laid = as_conditions(conditions)
        compiled = self.conditions(laid)
        engine = self._engine()
        probs = engine.launch(self.inputs, compiled).result() if compiled else torch.zeros(0, 1)
        return self.outcome(laid, probs)

    def outcome(self, laid: Grid, probs: torch.Tensor) -> Outcome:
        """The labelled outcome of `laid`'s conditions, from the engine's rows."""
        present = [c is not None for c in laid.conditions]
        return Outcome(probs, laid.dims, laid.coords, present)

    def conditions(self, conditions: Grid | Sequence[Condition] | Condition) -> list:
        """The engine's conditions (`engine.condition.KnockoutCondition`: cut matrices per layer,
        site edits) for this sample, as `run` gives them to the engine; a sparse grid's empty
        cells give none."""

        def blocked_of(expressions: tuple[str, ...]) -> torch.Tensor:
            return torch.from_numpy(self.blocked(expressions))

        return [
            compile_condition(c, self.layout, self.num_layers, self.ablation_source, blocked_of)
            for c in as_conditions(conditions).present
        ]

    def blocked(self, edges: str | Sequence[str]) -> np.ndarray:
        """(L, L) bool: the (query, key) pairs that cutting `edges` forbids in this prompt
        (kept for the sample: conditions cutting the same edges share one matrix)."""
        key = (edges,) if isinstance(edges, str) else tuple(edges)
        memo = self.scratch.setdefault("blocked", {})
        if key not in memo:
            cut = np.zeros((self.layout.seq_len, self.layout.seq_len), dtype=bool)
            for expression in key:
                cut |= blocked_edges(expression, self.layout)
            memo[key] = cut
        return memo[key]

    # -- the run's layer sweep (--window, --window-style, --sweep) ----------------------------

    @property
    def sweep_layers(self) -> range:
        """The positions the run's sweep stands at (every layer unless the run names a range)."""
        start, stop = self._sweep.layers or (0, self.num_layers)
        return range(start, stop)

    def window(self, layer: int) -> tuple[int, ...]:
        """The layers a knockout cuts when the run's sweep stands at `layer` (its window size
        and style)."""
        return self._sweep.window_at(layer, self.num_layers)

    @cached_property
    def _sweep(self) -> Sweep:
        # Settled against the model once: a grid asks `window` for each of its cells.
        return self.sweep.resolve(self.num_layers)

    # -- the answer --------------------------------------------------------------------------

    @cached_property
    def clean(self) -> Clean:
        """The clean answer, as the built-in kinds score it."""
        pred = int(self.answer_id)
        letter = self.layout.true_letter
        return Clean(self.clean_probs, pred, self.true_id, letter, self.loaded.decode(pred))

    def answer_changes(self, outcome: Outcome) -> dict[str, xr.DataArray]:
        """What the built-in knockouts record of the answer under each condition: p of the
        clean prediction and of the true answer (`prob_pred`, `prob_true`), their relative
        change in % (`rel_change_*`), the new argmax's text (`new_pred`) and whether it is
        right (`correct`, exact as the reference scores)."""
        values = answer_values(outcome.probs, self.clean, self._decoder)
        fills = {"new_pred": "", "correct": False}
        return {name: outcome.label(v, fills.get(name, np.nan)) for name, v in values.items()}

    @cached_property
    def _decoder(self) -> Decoder:
        return Decoder(self.loaded)

    def _engine(self) -> ReferenceEngine:
        if self.engine is not None:
            return self.engine
        if "engine" not in self.scratch:
            self.scratch["engine"] = FastEngine(self.loaded)
        return self.scratch["engine"]

    # -- runs and reads -------------------------------------------------------------------------

    def capture(self, frames: np.ndarray | None = None) -> Run:
        """This prompt over `frames` (the sample's own if None): every layer's site outputs,
        the source of a `Patch`."""
        if frames is None:
            return self.clean_run
        prepared = self.prepare(frames)
        return capture_run(self.loaded, prepared.inputs, prepared.layout)

    @cached_property
    def clean_run(self) -> Run:
        """The clean run's site outputs at every layer."""
        return capture_run(self.loaded, self.inputs, self.layout)

    def hidden(self, site: str, layer: int, group: str) -> torch.Tensor:
        """(tokens, d) the clean run's `site` output at `layer` over `group`."""
        return self.clean_run.at(site, layer, group)

    def attention_mass(
        self, targets: Sequence[str], sources: Sequence[str], layers: Sequence[int] | None = None
    ) -> xr.DataArray:
        """The attention each target group's queries put on each source group's keys, averaged
        over the queries: (layer, head, target, source). Works under sdpa (the read computes
        with eager attention for its one forward)."""
        layers = list(range(self.num_layers)) if layers is None else list(layers)
        mass = group_attention_mass(
            self.loaded, self.inputs, self.layout, list(targets), list(sources), layers
        )
        return xr.DataArray(
            mass.cpu().numpy(),
            dims=("layer", "head", "target", "source"),
            coords={"layer": layers, "target": list(targets), "source": list(sources)},
        )

    def ablation_source(self, how: str) -> Run:
        """The run an ablation reads, made on first use and kept for the sample: `resample`, the
        first donor's video under this prompt; `mean`, the mean over MEAN_DONORS donors'."""
        cache = self.scratch.setdefault("ablation_sources", {})
        if how not in cache:
            donors = self.donors(1 if how == "resample" else MEAN_DONORS)
            runs = [self.capture(self.frames_of(d)) for d in donors]
            cache[how] = runs[0] if how == "resample" else Run.mean(runs)
        return cache[how]

    # -- counterfactual inputs -------------------------------------------------------------------

    @cached_property
    def frames(self) -> np.ndarray:
        """The sample's decoded frames (T, H, W, 3), as the model saw them."""
        return self.frames_of(self.sample)

    def frames_of(self, sample: Sample) -> np.ndarray:
        """Another sample's frames, decoded as this sample's were (count, the model's rule)."""
        return sample_frames(sample, self.frame_count, self.loaded.adapter)

    def prepare(self, frames: np.ndarray) -> Prepared:
        """The same sample with other frames: inputs and layout for a counterfactual."""
        return self.loaded.adapter.prepare(self.loaded, self.sample, frames)

    def donors(self, n: int = 1) -> list[Sample]:
        """`n` samples of other videos, in an order fixed by the seed and this sample alone
        (each candidate ranked by a hash of both): the same donors in every run of the data."""
        own = str(self.sample.video)
        seen: set[str] = set()
        pool = []
        for s in sorted(self.others, key=lambda s: self._rank(s.id)):
            video = str(s.video)
            if video != own and video not in seen:
                seen.add(video)
                pool.append(s)
                if len(pool) == n:
                    break
        if not pool:
            raise SampleError("a counterfactual needs another video, and the data has one only")
        return pool

    def other_frames(self, k: int = 0) -> np.ndarray:
        """Frames of the k-th donor video (`donors`)."""
        return self.frames_of(self.donors(k + 1)[-1])  # the last there is, where fewer

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator seeded by the run seed and this sample: reruns draw the same."""
        return np.random.default_rng(zlib.crc32(f"{self.seed}/{self.sample.id}/{salt}".encode()))

    def _rank(self, other: str) -> int:
        return zlib.crc32(f"{self.seed}/{self.sample.id}/{other}".encode())
