"""Block-sparse attention for the side-by-side recompute.

Rows laid side by side in one sequence attend to the shared prefix and to their own suffix only;
under SDPA every query still meets every other row's keys, masked, and on the paper's short
sweeps three quarters of that attention is thrown away. FlexAttention with a block mask skips the
tiles of the (query, key) grid that hold no allowed edge, and applies the mask only in the tiles
that hold some.

The decoder layers pick their attention function by their config's `_attn_implementation` from
transformers' registry, so the side-by-side path calls twins of the layers whose config names the
function here; the model itself is not touched.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from typing import Any

import torch

from flowtrace.engine.compiled import plain_twin

ATTENTION_NAME = "flowtrace_block_sparse"
BLOCK = 128  # FlexAttention's tile, on both axes
# FLOWTRACE_BLOCK_SPARSE=0/1 overrides the default (on where the recompute compiles: CUDA).
BLOCK_SPARSE_ENV = "FLOWTRACE_BLOCK_SPARSE"

_compiled_flex: Any = None
# Uncompiled FlexAttention (off a GPU) warns that it computes densely: it is meant to, there.
warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")


def block_sparse_default(compile: bool) -> bool:
    setting = os.environ.get(BLOCK_SPARSE_ENV, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    return compile


def padded(size: int, block: int = BLOCK) -> int:
    """`size` rounded up to whole tiles: the mask buffer's extent, so no tile reads outside it."""
    return math.ceil(size / block) * block


def sparse_blocks(allowed: torch.Tensor, q_len: int, kv_len: int, block: int = BLOCK) -> Any:
    """A FlexAttention BlockMask for the first `q_len` queries and `kv_len` keys of `allowed`.

    `allowed` is (Q, K) or (heads, Q, K) bool, both axes at least `padded` of the live sizes and
    False beyond them: the mask function indexes it directly, and a tile is full only if every
    edge in it is allowed.
    """
    from torch.nn.attention.flex_attention import BlockMask

    q_tiles, kv_tiles = math.ceil(q_len / block), math.ceil(kv_len / block)
    live = allowed[..., : q_tiles * block, : kv_tiles * block]
    tiles = live.unflatten(-1, (kv_tiles, block)).unflatten(-3, (q_tiles, block))
    some = tiles.any(-1).any(-2)  # (..., q_tiles, kv_tiles)
    every = tiles.all(-1).all(-2)
    if allowed.dim() == 2:

        def mask_mod(b, h, q, kv):
            return allowed[q, kv]

        some, every = some[None], every[None]
    else:

        def mask_mod(b, h, q, kv):
            return allowed[h, q, kv]

    partial_count, partial_index = _listing(some & ~every)
    full_count, full_index = _listing(every)
    return BlockMask.from_kv_blocks(
        partial_count,
        partial_index,
        full_count,
        full_index,
        BLOCK_SIZE=block,
        mask_mod=mask_mod,
        seq_lengths=(q_len, kv_len),
    )


def _listing(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query tile, how many key tiles are marked and their indices first (batch dim added)."""
    count = tiles.sum(-1, dtype=torch.int32)
    index = tiles.to(torch.int8).argsort(dim=-1, descending=True, stable=True).to(torch.int32)
    return count[None], index[None]


def block_sparse_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature over a BlockMask from `sparse_blocks`."""
    for name in ("softcap", "s_aux"):  # what this function would silently leave out
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"block-sparse attention does not apply {name}")
    out = _flex(query.device)(
        query,
        key,
        value,
        block_mask=attention_mask,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def _flex(device: torch.device) -> Any:
    """FlexAttention, compiled on a GPU (once per process; dynamic shapes, since every chunk's
    lengths differ); eager elsewhere, where it computes the same numbers densely."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=True)
    return _compiled_flex


def block_sparse_twins(twins: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """Copies of the decoder layers' plain twins (sharing every parameter) whose attention is
    `block_sparse_attention`: their modules hold a copy of the config naming it."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, block_sparse_attention)
    out = []
    for twin in twins:
        sparse = plain_twin(twin)
        configs: dict[int, Any] = {}
        for module in sparse.modules():
            config = module.__dict__.get("config")
            if config is None or not hasattr(config, "_attn_implementation"):
                continue
            if id(config) not in configs:
                configs[id(config)] = copy.copy(config)
                configs[id(config)]._attn_implementation = ATTENTION_NAME
            module.config = configs[id(config)]
        out.append(sparse)
    return out
