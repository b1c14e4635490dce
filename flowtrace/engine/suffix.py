"""The pieces of a suffix recompute: the rows it runs, the clean prefix it attends, where each
suffix's positions come from, and the edits a patched row carries."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flowtrace.engine.condition import Edit, KnockoutCondition
from flowtrace.models import LoadedModel


class PrefixCache:
    """Duck-typed cache for one layer call: prepends the clean prefix K/V, keeps nothing.

    Decoder attention calls only `update` on the cache it is given; broadcasting the one prefix
    into the concatenation avoids holding a copy per row beyond this layer.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values

    def update(self, keys: torch.Tensor, values: torch.Tensor, *args: Any, **kwargs: Any):
        rows = keys.shape[0]
        prefix_k = self.keys.expand(rows, *self.keys.shape[1:])
        prefix_v = self.values.expand(rows, *self.values.shape[1:])
        return torch.cat([prefix_k, keys], dim=-2), torch.cat([prefix_v, values], dim=-2)


@dataclass(frozen=True, eq=False)
class Row:
    """One condition to recompute: where its first changed query sits, where its first changed
    layer is (its cuts and site edits both count)."""

    index: int  # position in the caller's list
    condition: KnockoutCondition
    start: int
    entry: int


# (row in the call, batch row, sequence positions in the recomputed batch, scale, value): one
# edit, placed.
Placed = tuple[int, int, torch.Tensor, float, torch.Tensor | None]


def placed_edits(
    rows: Sequence[Row], offsets: list[int], flat: bool, device: torch.device, dtype: torch.dtype
) -> dict[tuple[str, int], list[Placed]]:
    """Per (site, layer), the rows' edits as places in the recomputed batch (row i of `rows`
    is batch row i, or the block at offsets[i] of the one side-by-side sequence)."""
    out: dict[tuple[str, int], list[Placed]] = {}
    for i, row in enumerate(rows):
        batch_row, first = (0, offsets[i]) if flat else (i, 0)
        for edit in row.condition.edits:
            placed = place_edit(edit, i, batch_row, first - row.start, device, dtype)
            out.setdefault((edit.site, edit.layer), []).append(placed)
    return out


def place_edit(
    edit: Edit, row: int, batch_row: int, shift: int, device: torch.device, dtype: torch.dtype
) -> Placed:
    """`edit` of the call's row `row` at batch row `batch_row`, its positions moved by `shift`."""
    value = None if edit.value is None else edit.value.to(device, dtype)
    return (row, batch_row, edit.positions.to(device) + shift, edit.scale, value)


def apply_edits(hidden: torch.Tensor, edits: list[Placed]) -> None:
    """Write `edits` into `hidden` (batch, seq, d) in place: scale * old + value."""
    for _, row, positions, scale, value in edits:
        new = hidden[row, positions] * scale if scale else torch.zeros_like(hidden[row, positions])
        hidden[row, positions] = new if value is None else new + value


def edit_output(edits: list[Placed]):
    """A forward hook writing `edits` into the module's output (a tensor, or a tuple's first)."""

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        apply_edits(output[0] if isinstance(output, tuple) else output, edits)
        return output

    return hook


@contextlib.contextmanager
def site_edits(
    loaded: LoadedModel, edits: dict[tuple[str, int], list[Placed]], layer: int
) -> Iterator[None]:
    """For one call of `layer`: its attention and MLP edits hooked onto the model's own modules."""
    hooks = []
    for site in ("attention", "mlp"):
        if (site, layer) in edits:
            module = loaded.site(loaded.model, layer, site)
            hooks.append(module.register_forward_hook(edit_output(edits[site, layer])))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def chunks_by_tokens(rows: list[Row], seq_len: int, limit: int) -> list[list[Row]]:
    """Consecutive rows, at most `limit` suffix tokens a chunk."""
    chunks: list[list[Row]] = []
    size = limit + 1
    for row in rows:
        n = seq_len - row.start
        if size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += n
    return chunks


def plan_chunks(
    rows: list[Row], seq_len: int, flat_limit: int, fixed: bool, token_budget: int
) -> list[tuple[list[Row], bool]]:
    """The recompute calls for `rows` (in entry order): (rows, side by side). Suffixes of at most
    `flat_limit` tokens lie side by side, in chunks of that many tokens (unless `fixed`, only
    those under a quarter of the sequence); the rest go as batch rows of one start, at most
    `token_budget` suffix tokens a call."""

    def lies_flat(row: Row) -> bool:
        # Short suffixes (→ last, → question) go side by side whatever their start; long
        # ones (cross-frame) go as batch rows of one start, where a prefix copy is cheap.
        suffix = seq_len - row.start
        return suffix <= flat_limit and (fixed or 4 * suffix <= seq_len)

    # Flat chunks (many short layer calls, bound by how fast the host queues them) first,
    # batched ones (long calls) last: the device queue holds a bounded number of kernels,
    # and ending on long ones leaves the most device work queued when `launch` returns,
    # the time the host has for the next sample's clean pass.
    flat_rows = [r for r in rows if lies_flat(r)]
    chunks = [(c, True) for c in chunks_by_tokens(flat_rows, seq_len, flat_limit)]
    by_start: dict[int, list[Row]] = {}
    for row in rows:
        if not lies_flat(row):
            by_start.setdefault(row.start, []).append(row)
    for start, group in by_start.items():
        size = max(1, token_budget // (seq_len - start))
        chunks += [(group[i : i + size], False) for i in range(0, len(group), size)]
    return chunks


def forks(rows: Sequence[Row], num_layers: int) -> dict[int, tuple[int, int]]:
    """Rows that can begin as a copy of an earlier one: i -> (j, layer) where rows i and j
    start at the same query, enter at the same layer and cut the same edges (the same matrices)
    in the same heads on every layer before `layer`, so i's stream entering `layer` is j's.

    A window sweep's first windows all begin at layer 0 and differ only where one ends: each
    row then computes those shared layers once. `layer` is the latest such point; j may be a
    fork itself when it has joined by then. Patched rows never fork.
    """
    joins: list[int] = [row.entry for row in rows]
    out: dict[int, tuple[int, int]] = {}
    earlier: dict[tuple, list[int]] = {}  # rows that may share a stream: one start, entry, heads
    for i, row in enumerate(rows):
        if row.condition.edits:
            continue
        cuts = row.condition.blocked
        heads = row.condition.heads
        group = earlier.setdefault((row.start, row.entry, heads and tuple(heads)), [])
        for j in group:
            others, layer = rows[j].condition.blocked, row.entry
            while layer < num_layers and cuts.get(layer) is others.get(layer):
                layer += 1
            if layer > max(joins[i], joins[j]):
                out[i], joins[i] = (j, layer), layer
        group.append(i)
    return out


def join_order(
    rows: Sequence[Row], copies: dict[int, tuple[int, int]]
) -> tuple[list[int], list[int], dict[int, int]]:
    """The rows in the order they join the recompute (indices into `rows`), the layer each joins
    at in that order, and the rows that begin as a copy of another's stream (`copies`, from
    `forks`), as position -> its parent's position in that order."""
    joins = [copies[i][1] if i in copies else r.entry for i, r in enumerate(rows)]
    order = sorted(range(len(rows)), key=joins.__getitem__)
    place = {old: new for new, old in enumerate(order)}
    parent = {place[i]: place[j] for i, (j, _) in copies.items()}
    return order, [joins[i] for i in order], parent


def shared_masks(masks: list[torch.Tensor | None], seq_len: int) -> list[torch.Tensor | None]:
    """Plain causal masks become None; equal masks of several layers become one tensor."""
    causal = None
    out: list[torch.Tensor | None] = []
    for mask in masks:
        if mask is not None:
            if causal is None:
                causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=mask.device).tril()
            if torch.equal(mask, causal):
                mask = None
            else:
                mask = next((m for m in out if m is not None and torch.equal(m, mask)), mask)
        out.append(mask)
    return out


def first_blocked_query(
    condition: KnockoutCondition, memo: dict[int, int | None] | None = None
) -> int | None:
    """The lowest query position the condition changes: the first a cut of any layer touches,
    or the first an edit rewrites (None: it changes nothing)."""
    memo = {} if memo is None else memo
    starts = [int(edit.positions.min()) for edit in condition.edits]
    for blocked in condition.blocked.values():
        if id(blocked) not in memo:
            memo[id(blocked)] = _first_row(blocked)
        if memo[id(blocked)] is not None:
            starts.append(memo[id(blocked)])
    return min(starts) if starts else None


def _first_row(blocked: torch.Tensor) -> int | None:
    """The first row of a (L, L) bool matrix holding a True, read without a device sync where
    the matrix is on the host (numpy: torch's CPU reductions of bool matrices are far slower)."""
    if blocked.device.type == "cpu":
        rows = np.flatnonzero(blocked.numpy().any(-1))
        return int(rows[0]) if rows.size else None
    rows = blocked.any(-1).nonzero()
    return int(rows[0, 0]) if rows.numel() else None


def side_by_side_kwargs(kwargs: dict[str, Any], starts: list[int]) -> dict[str, Any]:
    """Position kwargs for suffixes from each start laid side by side, in that order."""
    out: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name == "position_embeddings":
            out[name] = tuple(torch.cat([t[..., p:, :] for p in starts], dim=-2) for t in value)
        else:
            out[name] = torch.cat([value[..., p:] for p in starts], dim=-1)
    return out


def first_tokens(kwargs: dict[str, Any], tokens: int) -> dict[str, Any]:
    """The side-by-side position kwargs of the rows joined so far."""
    out: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name == "position_embeddings":
            out[name] = tuple(t[..., :tokens, :] for t in value)
        else:
            out[name] = value[..., :tokens]
    return out


def suffix_kwargs(kwargs: dict[str, Any], start: int) -> dict[str, Any]:
    """Layer kwargs cut to positions ≥ start: the sequence is dim -2 of cos/sin, -1 of ids."""
    out: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name == "position_embeddings":
            out[name] = tuple(t[..., start:, :] for t in value)
        else:
            out[name] = value[..., start:]
    return out
