"""Knockout attention masks: the model's own mask minus the cut edges, per row and per head.

Which layers and heads a sweep cuts is flowtrace.tokens.sweep's concern."""

from __future__ import annotations

import torch

from flowtrace.errors import FlowtraceError


def refuse_starved(allowed: torch.Tensor) -> None:
    """Refuse a mask that leaves a query no key: with every key at finfo.min a softmax row
    turns uniform over *all* keys, future ones included, so such a condition would silently
    measure something else."""
    starved = ~allowed.any(-1)
    if starved.any():
        rows = starved.nonzero()[:, -1].unique().tolist()
        raise FlowtraceError(
            f"this knockout leaves query position(s) {rows[:8]} with no key to attend to; "
            "keep at least one source position (e.g. do not block a group from itself at its start)"
        )


class AllowedEdges:
    """Allowed-edge masks on the device for one knockout call, each made once (sweeps share a
    blocked matrix across rows and layers). Nothing here waits for the device: the blocked
    matrices travel from pinned memory without a sync, and the starved-query check (a read
    back) runs once, in `check()`, after every recompute has been queued.
    """

    def __init__(self, seq_len: int, device: torch.device) -> None:
        self.seq_len, self.device = seq_len, device
        self._masks: dict[tuple[int, int], torch.Tensor] = {}
        # Keeps each key's objects alive, so their ids stay theirs for the call's life.
        self._keys: list[tuple[torch.Tensor | None, torch.Tensor | None]] = []
        self._starved: list[torch.Tensor] = []

    def __call__(self, own: torch.Tensor | None, blocked: torch.Tensor | None) -> torch.Tensor:
        key = (id(own), id(blocked))
        if key not in self._masks:
            self._keys.append((own, blocked))
            if own is None:
                own = torch.ones(self.seq_len, self.seq_len, dtype=torch.bool, device=self.device)
                own = own.tril()
            allowed = own if blocked is None else own & ~to_device_async(blocked, self.device)
            self._masks[key] = allowed
            self._starved.append((~allowed.any(-1)).any())
        return self._masks[key]

    def check(self) -> None:
        """Refuse a knockout that left some query no key (one read back for the whole call)."""
        if self._starved and bool(torch.stack(self._starved).any()):
            for mask in self._masks.values():
                refuse_starved(mask)


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; a host tensor goes to a GPU from pinned memory, asynchronously (a
    copy from pageable memory waits for the device to finish its queued work first)."""
    if tensor.device.type == device.type and device.index in (None, tensor.device.index):
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def model_allowed(mask: torch.Tensor | None) -> torch.Tensor | None:
    """The edges a layer's own `attention_mask` kwarg lets through, as (batch, L, L) bool.

    None means plain causal attention (what SDPA layers get without padding). Models with padding,
    sliding windows or planted routes pass a 4D bool or additive mask; a knockout cuts edges from
    it rather than replacing it.
    """
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return mask[:, 0]
    return mask[:, 0] > torch.finfo(mask.dtype).min / 2


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(rows, L, L) bool -> (rows, 1, L, L) additive mask, finfo.min where forbidden (as the
    paper); (rows, heads, L, L) keeps its head dim."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask if allowed.dim() == 4 else mask.unsqueeze(-3)


def per_head(
    per_row: torch.Tensor, conditions, layer: int, uncut: torch.Tensor, heads: int
) -> torch.Tensor:
    """(rows, L, L) -> (rows, heads, L, L): a head-level condition cuts only in its heads, the
    others keep `uncut` (the mask without this condition's edges)."""
    out = per_row[:, None].repeat(1, heads, 1, 1)
    for row, condition in enumerate(conditions):
        if condition.heads is not None and layer in condition.blocked:
            others = [h for h in range(heads) if h not in condition.heads]
            out[row, others] = uncut
    return out
