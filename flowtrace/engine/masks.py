"""Knockout attention masks: the model's own mask minus the cut edges, per row and per head.

Which layers and heads a sweep cuts is flowtrace.sweep's concern."""

from __future__ import annotations

import torch

from flowtrace.errors import FlowtraceError


def allowed_attention(blocked: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
    """The model's own mask (`base`, default causal) minus the blocked edges; refuses a query
    that would be left with no key.

    With every key at finfo.min a softmax row turns uniform over *all* keys, future ones included,
    so such a condition would silently measure something else.
    """
    seq_len = blocked.shape[-1]
    if base is None:
        base = torch.ones(seq_len, seq_len, dtype=torch.bool, device=blocked.device).tril()
    allowed = base & ~blocked
    starved = ~allowed.any(-1)
    if starved.any():
        rows = starved.nonzero()[:, -1].unique().tolist()
        raise FlowtraceError(
            f"this knockout leaves query position(s) {rows[:8]} with no key to attend to; "
            "keep at least one source position (e.g. do not block a group from itself at its start)"
        )
    return allowed


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
