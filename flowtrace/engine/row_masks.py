"""The allowed-edge masks of one recompute's rows, kept up to date layer by layer.

Flat: one (heads?, Q, K) mask for the rows' suffixes side by side after the shared prefix, each
row's block seeing the prefix and its own block only. Batched (one start): (rows, heads?, S, T),
a row per batch row. Head-level rows hold a mask per head: the cut in their heads, their uncut
mask in the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flowtrace.engine.masks import AllowedEdges
from flowtrace.engine.suffix import Row


class RowMasks:
    """Bool masks of the rows joined so far; `layer` rewrites those whose edges change."""

    def __init__(
        self,
        rows: Sequence[Row],
        flat: bool,
        heads: int,
        prefix_len: int,
        lengths: list[int],
        offsets: list[int],
        seq_len: int,
        edges: AllowedEdges,
    ) -> None:
        self.rows, self.flat, self.heads = rows, flat, heads
        self.prefix_len, self.lengths, self.offsets = prefix_len, lengths, offsets
        self.edges = edges
        per_head = (heads,) if heads else ()
        if flat:
            total = sum(lengths)
            shape = (*per_head, total, prefix_len + total)
        else:
            shape = (len(rows), *per_head, lengths[0], seq_len)
        self.masks = torch.zeros(shape, dtype=torch.bool, device=edges.device)
        self._current: list[tuple[int, int]] = []  # (own, blocked) ids each row's mask holds

    def layer(self, index: int, own: torch.Tensor | None, joined: int, tokens: int) -> torch.Tensor:
        """The mask of layer `index` (the model's own mask `own`) for the first `joined` rows,
        `tokens` suffix tokens in all; a leading batch dim when flat."""
        self._current += [(-1, -1)] * (joined - len(self._current))
        for i, r in enumerate(self.rows[:joined]):
            blocked = r.condition.blocked.get(index)
            key = (id(own), id(blocked))
            if self._current[i] == key:  # only rows entering or leaving a cut rewrite their mask
                continue
            self._current[i] = key
            self._write(i, r, own, blocked)
        # Flat: a leading batch dim, so the additive mask is 4D as in the batched path; with a
        # 3D one SDPA on CPU rounds otherwise (2e-5 in p on the trained toy, one row alone).
        if self.flat:
            return self.masks[..., :tokens, : self.prefix_len + tokens][None]
        return self.masks[:joined]

    def _write(
        self, i: int, r: Row, own: torch.Tensor | None, blocked: torch.Tensor | None
    ) -> None:
        masks, edges = self.masks, self.edges
        cut = edges(own, blocked)[r.start :]
        only = r.condition.heads if blocked is not None else None
        # A head-level row: the cut in its heads, its uncut mask in the others.
        for chosen, a in [(slice(None), edges(own, None)[r.start :]), (only, cut)]:
            if only is None:
                chosen, a = slice(None), cut
            rows_of = (list(chosen) if isinstance(chosen, tuple) else chosen,) if self.heads else ()
            if self.flat:
                o, n = self.offsets[i], self.lengths[i]
                masks[(*rows_of, slice(o, o + n), slice(0, r.start))] = a[:, : r.start]
                own_block = slice(self.prefix_len + o, self.prefix_len + o + n)
                masks[(*rows_of, slice(o, o + n), own_block)] = a[:, r.start :]
            else:
                masks[(i, *rows_of)] = a
            if only is None:
                break
