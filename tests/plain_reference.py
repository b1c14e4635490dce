"""A knockout written without flowtrace, as the paper's code does it: the independent reference."""

from __future__ import annotations

import numpy as np
import torch


def plain_knockout_probs(model, inputs, blocked_pairs, layers, heads=None) -> torch.Tensor:
    """The same (query, key) pairs cut in every layer of `layers` (in `heads` only, if given)."""
    pairs = {layer: blocked_pairs for layer in layers}
    return plain_per_layer_probs(model, inputs, pairs, heads)


def plain_per_layer_probs(model, inputs, pairs_by_layer, heads=None) -> torch.Tensor:
    """Reference written without flowtrace: a pre-hook swaps a hand-built 4D additive mask into
    each listed layer's attention (as the paper's code does), then one plain forward. With
    `heads`, the mask has a head dim and cuts only in those heads."""
    seq_len = inputs["input_ids"].shape[1]
    dtype = model.dtype
    num_heads = model.config.get_text_config().num_attention_heads
    handles = []
    for layer, pairs in pairs_by_layer.items():
        keep = torch.ones(seq_len, seq_len).tril()
        for queries, keys in pairs:
            keep[np.ix_(queries, keys)] = 0
        if heads is not None:
            per_head = torch.ones(num_heads, seq_len, seq_len).tril()
            per_head[list(heads)] = keep
            keep = per_head
        mask = ((1.0 - keep) * torch.finfo(dtype).min).to(dtype)
        mask = mask[None] if heads is not None else mask[None, None]

        def swap(module, args, kwargs, mask=mask):
            kwargs["attention_mask"] = mask
            return args, kwargs

        attention = model.model.language_model.layers[layer].self_attn
        handles.append(attention.register_forward_pre_hook(swap, with_kwargs=True))
    try:
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return logits.float().softmax(-1)
