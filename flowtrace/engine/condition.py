"""What a knockout cuts: blocked (query, key) edges per layer, optionally in some heads only.

Recipes build conditions, and every engine runs them, so the value lives beside the engines
rather than inside one of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KnockoutCondition:
    """Edges to cut, per layer: layer -> (L, L) bool [query, key]; in every attention head, or
    only in `heads` (head-level knockout)."""

    blocked: Mapping[int, torch.Tensor]
    heads: tuple[int, ...] | None = None

    @classmethod
    def window(
        cls, blocked: torch.Tensor, layers: Sequence[int], heads: Sequence[int] | None = None
    ) -> KnockoutCondition:
        """The same edges cut in every layer of a window (the paper's sweeps)."""
        return cls({layer: blocked for layer in layers}, None if heads is None else tuple(heads))

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.blocked))
