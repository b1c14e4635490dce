"""The edges flowtrace counts and the plans that cut them: the counted region (causal pairs from
the first video token on, as the reference code counts them), the `separators` group a found
pathway may name, and random cuts of a per-layer budget (the random baseline)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from flowtrace.tokens.layout import MARKERS, TokenLayout

# Counted tokens of no named group (the "USER:" between the video and the query): a found pathway
# may keep or cut their edges like any group's, so EffectivePathway's edges may name them.
SEPARATORS = "separators"
_SEPARATED = ("video", MARKERS, "query", "prompt_tail", "last")


def with_separators(layout: TokenLayout) -> TokenLayout:
    """The layout with the group `separators`: positions from the first video token on that lie
    in none of video, video_markers, query, prompt_tail, last."""
    if SEPARATORS in layout.groups:
        return layout
    start = int(layout["video"][0])
    named = np.zeros(layout.seq_len, dtype=bool)
    for name in _SEPARATED:
        if name in layout.groups:
            named[layout.groups[name]] = True
    rest = np.flatnonzero(~named & (np.arange(layout.seq_len) >= start)).astype(np.int64)
    return dataclasses.replace(layout, groups={**layout.groups, SEPARATORS: rest})


def counted_edges(layout: TokenLayout) -> torch.Tensor:
    """(L, L) bool: causal pairs whose query and key are both at or after the first video token."""
    start = int(layout["video"][0])
    region = torch.ones(layout.seq_len, layout.seq_len, dtype=torch.bool).tril()
    region[:start] = False
    region[:, :start] = False
    return region


def random_plan(
    counted: torch.Tensor, per_layer: dict[int, int], generator: torch.Generator
) -> dict[int, torch.Tensor]:
    """Cut `per_layer[layer]` edges drawn uniformly from `counted` in each layer."""
    pairs = counted.nonzero()
    plan = {}
    for layer, n in sorted(per_layer.items()):
        chosen = pairs[torch.randperm(len(pairs), generator=generator)[:n]]
        cut = torch.zeros_like(counted)
        cut[chosen[:, 0], chosen[:, 1]] = True
        if n:
            plan[layer] = cut
    return plan
