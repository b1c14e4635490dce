"""What one engine row changes: attention edges cut per layer (in every head or in some), and
edits of a site's output at some positions (patches, ablations, steering).

Recipes and trace programs build conditions, and every engine runs them, so the value lives beside
the engines rather than inside one of them. `flowtrace.interventions` is the vocabulary programs
write; it turns into these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

# Where an edit applies, at a decoder layer: its output (the residual stream the next layer
# reads), its attention module's output, its MLP's output (both before the residual add).
SITES = ("residual", "attention", "mlp")


@dataclass(frozen=True, eq=False)
class Edit:
    """At decoder layer `layer`, the `site` output at `positions` becomes
    `scale * output + value`: a replacement (scale 0: patch, zero or mean ablation), an addition
    (scale 1: steering by a vector) or a scaling (value None)."""

    site: str
    layer: int
    positions: torch.Tensor  # (n,) int64 prompt positions, ascending, on the host
    scale: float = 0.0
    value: torch.Tensor | None = None  # (n, d) or (d,); None adds nothing

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ValueError(f"edit site {self.site!r}: choose one of {', '.join(SITES)}")
        if self.positions.dim() != 1 or not len(self.positions):
            raise ValueError("an edit needs a non-empty 1-D tensor of positions")

    @property
    def entry(self) -> int:
        """The first layer whose computation the edit changes: a residual edit changes what the
        next layer reads; the others change the layer itself."""
        return self.layer + 1 if self.site == "residual" else self.layer

    @property
    def mode(self) -> str:
        if self.value is None:
            return "scale"
        return "replace" if self.scale == 0 else "add" if self.scale == 1 else "affine"


@dataclass(frozen=True)
class KnockoutCondition:
    """Edges to cut, per layer: layer -> (L, L) bool [query, key]; in every attention head, or
    only in `heads` (head-level knockout); and site edits (`Edit`), applied together."""

    blocked: Mapping[int, torch.Tensor]
    heads: tuple[int, ...] | None = None
    edits: tuple[Edit, ...] = ()

    @classmethod
    def window(
        cls, blocked: torch.Tensor, layers: Sequence[int], heads: Sequence[int] | None = None
    ) -> KnockoutCondition:
        """The same edges cut in every layer of a window (the paper's sweeps)."""
        return cls({layer: blocked for layer in layers}, None if heads is None else tuple(heads))

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers that cut edges."""
        return tuple(sorted(self.blocked))

    @property
    def entry(self) -> int | None:
        """The first layer the condition changes (None: it changes nothing)."""
        entries = [*self.blocked, *(e.entry for e in self.edits)]
        return min(entries) if entries else None
