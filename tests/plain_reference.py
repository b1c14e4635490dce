"""A knockout written without flowtrace, as the paper's code does it: the independent reference."""

from __future__ import annotations

import numpy as np
import torch


def plain_knockout_probs(model, inputs, blocked_pairs, layers) -> torch.Tensor:
    """Reference written without flowtrace: a pre-hook swaps a hand-built 4D additive mask into
    the attention modules of `layers` (as the paper's code does), then one plain forward."""
    seq_len = inputs["input_ids"].shape[1]
    keep = torch.ones(seq_len, seq_len).tril()
    for queries, keys in blocked_pairs:
        keep[np.ix_(queries, keys)] = 0
    dtype = model.dtype
    mask = ((1.0 - keep) * torch.finfo(dtype).min).to(dtype)[None, None]

    def swap(module, args, kwargs):
        kwargs["attention_mask"] = mask
        return args, kwargs

    handles = [
        model.model.language_model.layers[i].self_attn.register_forward_pre_hook(
            swap, with_kwargs=True
        )
        for i in layers
    ]
    try:
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return logits.float().softmax(-1)
