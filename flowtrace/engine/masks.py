"""Layer windows and knockout attention masks."""

from __future__ import annotations

from typing import Literal

import torch

from flowtrace.errors import FlowtraceError

WindowStyle = Literal["center", "inverse", "top_down", "bottom_up"]
WINDOW_STYLES: tuple[str, ...] = ("center", "inverse", "top_down", "bottom_up")


# The reference code runs a window of 9 layers on every model it analyses (28, 32 and 40 layers
# deep), so real models get 9 whatever their depth. Only toy-sized models (the embedded toys have
# 8 layers; released video LLM backbones have 18 or more) get a window scaled to their depth,
# where 9 would cover every layer.
REFERENCE_WINDOW = 9
FIXED_WINDOW_FROM = 16  # layers; below this the window is scaled
WINDOW_RULE = (
    f"{REFERENCE_WINDOW} layers (the reference code's window) for models of {FIXED_WINDOW_FROM} "
    "layers or more; shallower models get 9/32 of their depth, rounded, made odd (8 layers: 3)"
)


def default_window(num_layers: int) -> int:
    """The window a sweep uses unless told: see WINDOW_RULE."""
    if num_layers >= FIXED_WINDOW_FROM:
        return REFERENCE_WINDOW
    scaled = round(num_layers * REFERENCE_WINDOW / 32)
    return max(1, scaled if scaled % 2 else scaled + 1)


def window_layers(layer: int, num_layers: int, window: int, style: str) -> tuple[int, ...]:
    """Layers blocked when the sweep stands at `layer`, as the reference code's window styles."""
    center = range(max(0, layer - window // 2), min(num_layers, layer + (window + 1) // 2))
    if style == "center":
        chosen = center
    elif style == "inverse":
        chosen = [i for i in range(num_layers) if i not in center]
    elif style == "top_down":
        chosen = range(layer, num_layers)
    elif style == "bottom_up":
        chosen = range(0, layer + 1)
    else:
        raise FlowtraceError(f"--window-style {style!r}: choose one of {', '.join(WINDOW_STYLES)}")
    return tuple(chosen)


def sweep_layers(num_layers: int, sweep: tuple[int, int] | None) -> range:
    if sweep is None:
        return range(num_layers)
    start, stop = sweep
    if not 0 <= start < stop <= num_layers:
        raise FlowtraceError(
            f"--sweep {start}-{stop}: need 0 <= start < stop <= {num_layers} (the model's layers)"
        )
    return range(start, stop)


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
