"""The cells a pathway search cuts (flowtrace.pathways.discovery, step 1): counted edges grouped by
(layer,
source group, target group); each sample ready for exact knockouts, the plan that cuts a set of
cells, and the acceptance test a sample must pass with them cut."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from flowtrace.data import Sample, sample_frames
from flowtrace.kinds.common import Clean, measure_clean
from flowtrace.models import LoadedModel
from flowtrace.tokens.edge_plans import SEPARATORS, counted_edges, with_separators
from flowtrace.tokens.edge_share import kept_shares
from flowtrace.tokens.layout import TokenLayout

Cell = tuple[int, str, str]  # (layer, source group, target group)


def cell_groups(layout: TokenLayout) -> list[str]:
    """The groups cells are made of, in sequence order (those this layout has)."""
    layout = with_separators(layout)
    # The query is one group: its "Question:" and "Options:" headers belong to neither question
    # nor an option, and the planted toy's routes need them.
    names = [f"frame_{t}" for t in range(layout.num_frames)]
    names += [SEPARATORS, "query", "prompt_tail", "last"]
    return [n for n in names if n in layout.groups and len(layout[n])]


def cell_index(layout: TokenLayout) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(L, L) int: each counted edge's cell as an index into the (source, target) pairs, -1 for
    edges of no cell; and the pairs (only those with an edge here)."""
    layout = with_separators(layout)
    groups = cell_groups(layout)
    counted = counted_edges(layout).numpy()
    cell_of = np.full((layout.seq_len, layout.seq_len), -1, dtype=np.int64)
    pairs = []
    for i, source in enumerate(groups):
        for target in groups[i:]:
            block = np.zeros_like(counted)
            block[np.ix_(layout[target], layout[source])] = True
            block &= counted
            if block.any():
                cell_of[block] = len(pairs)
                pairs.append((source, target))
    return cell_of, pairs


@dataclass
class FitSample:
    """One sample ready for exact knockouts: inputs, clean answer, cell index of every edge."""

    sample: Sample
    inputs: dict[str, torch.Tensor]
    layout: TokenLayout
    clean: Clean
    counted: torch.Tensor  # (L, L) bool
    cell_of: np.ndarray  # (L, L) int: index into `pairs` of the edge's cell, -1 outside cells
    pairs: list[tuple[str, str]]
    # AtP's estimated change of the answer's log-odds were each cell cut (attribution_order).
    estimates: dict[Cell, float] = field(default_factory=dict)

    def pair_edges(self) -> dict[tuple[str, str], np.ndarray]:
        return {pair: self.cell_of == i for i, pair in enumerate(self.pairs)}


def prepare_samples(
    loaded: LoadedModel, engine, samples: Sequence[Sample], frames: int | None = None
) -> list[FitSample]:
    """Clean pass and cell index of each sample (frames: the model's default count)."""
    frames = frames or loaded.adapter.default_frames
    out = []
    for sample in samples:
        prepared = loaded.adapter.prepare(
            loaded, sample, sample_frames(sample, frames, loaded.adapter)
        )
        layout = prepared.layout
        clean = measure_clean(loaded, engine, prepared, sample)
        counted = counted_edges(layout)
        cell_of, pairs = cell_index(layout)
        out.append(FitSample(sample, prepared.inputs, layout, clean, counted, cell_of, pairs))
    return out


def cut_plan(
    item: FitSample, cut: set[Cell], layers: int, rest: bool = True
) -> dict[int, torch.Tensor]:
    """Per layer, the edges cut: the cells in `cut` and (with `rest`) the edges of no cell."""
    index = {pair: i for i, pair in enumerate(item.pairs)}
    per_layer: dict[int, list[int]] = {}
    for layer, source, target in cut:
        if (source, target) in index:
            per_layer.setdefault(layer, []).append(index[(source, target)])
    outside = (item.cell_of < 0) & item.counted.numpy()
    plan = {}
    for layer in range(layers):
        mask = np.isin(item.cell_of, per_layer.get(layer, [])) & (item.cell_of >= 0)
        if rest:
            mask |= outside
        if mask.any():
            plan[layer] = torch.from_numpy(mask)
    return plan


def kept_share(item: FitSample, plan: dict[int, torch.Tensor], layers: int) -> float:
    """% of counted edges (over all layers) a plan keeps."""
    return kept_shares(plan, item.counted, layers)[0]


def is_right(item: FitSample, probs: torch.Tensor, loaded: LoadedModel) -> bool:
    """As the reference counts an answer under knockout (`Clean.is_correct`, exact text)."""
    pred = int(probs.argmax())
    return item.clean.is_correct(pred, loaded.decode(pred))


def keeps(item: FitSample, probs: torch.Tensor, loaded: LoadedModel, ratio: float) -> bool:
    """The acceptance test of the search and of the selection: still answered right, and at
    least `ratio` of the clean p(true answer) kept."""
    floor = ratio * float(item.clean.probs[item.clean.true_id])
    return is_right(item, probs, loaded) and float(probs[item.clean.true_id]) >= floor
