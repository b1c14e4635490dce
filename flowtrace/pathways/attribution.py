"""Attribution patching (AtP) for attention edges: every edge's knockout effect, estimated.

Cutting an edge sets its attention score to -inf. Give every edge (layer, head, query, key) an
additive bias m on its score, zero in the clean pass; cutting the edge is m = -inf, and its
gate w = exp(m) goes from 1 to 0. To first order in w, the change of the metric (the log-odds of
the clean prediction) under a cut set S is Σ_{e∈S} -∂metric/∂m_e: one forward and one backward
pass give the estimate for every edge at once. It is linear: it adds edges' effects and misses
what they do together (an edge that matters only once another is cut, a head's attention
saturated on one group). docs/pathways.md says when its ranking can be trusted.

The pass reuses the fast engine's clean capture (each layer's input, the model's own masks, the
position kwargs) and calls the decoder layers directly over the whole sequence with the biased
mask, as the fast engine's recompute does.
"""

from __future__ import annotations

import numpy as np
import torch

from flowtrace.engine.fast import FastEngine
from flowtrace.engine.masks import additive_mask
from flowtrace.errors import FlowtraceError


def edge_attribution(
    engine: FastEngine, inputs: dict[str, torch.Tensor], target: int | None = None
) -> torch.Tensor:
    """(layers, heads, L, L) float32: AtP's estimate of Δ log-odds of `target` were each single edge
    cut (0 where the model's mask already forbids the edge). `target`: the clean prediction
    unless given."""
    if not isinstance(engine, FastEngine):
        raise FlowtraceError("edge_attribution needs the fast engine (make_engine('fast', loaded))")
    loaded = engine.loaded
    capture = engine.capture(inputs)
    seq_len, heads = capture.seq_len, loaded.num_heads
    if target is None:
        target = int(capture.probs.argmax())
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=loaded.device).tril()
    bias = torch.zeros(
        loaded.num_layers, heads, seq_len, seq_len, device=loaded.device, requires_grad=True
    )
    layers = loaded.layers(loaded.model)
    hidden = capture.inputs[0]
    # The whole sequence is recomputed: no prefix from the clean pass.
    cache = {engine.cache_kwarg: None}
    with torch.enable_grad():
        for index in range(loaded.num_layers):
            own = capture.own_masks[index]
            allowed = causal if own is None else own.to(loaded.device)
            mask = additive_mask(allowed[None], loaded.dtype) + bias[index][None].to(loaded.dtype)
            out = layers[index](
                hidden,
                attention_mask=mask,
                use_cache=False,
                **cache,
                **capture.layer_kwargs,
            )
            hidden = out[0] if isinstance(out, tuple) else out
            if capture.deltas[index] is not None:
                hidden = hidden + capture.deltas[index]
        logits = loaded.lm_head()(loaded.final_norm()(hidden[:, -1])).float()
        metric = log_odds(logits[0], target)
        (grad,) = torch.autograd.grad(metric, bias)
    # Edges the mask forbids carry a gradient of exactly 0 already (their weight is 0).
    return -grad.detach().float()


def log_odds(logits: torch.Tensor, target: int) -> torch.Tensor:
    """log p(target) - log(1 - p(target)) from logits (..., V): unlike log p it does not go flat
    as p(target) nears 1, where a confident model's gradients would hide every edge."""
    others = torch.cat([logits[..., :target], logits[..., target + 1 :]], dim=-1)
    return logits[..., target] - others.logsumexp(-1)


def cell_attribution(
    per_edge: torch.Tensor, cells: dict[tuple[str, str], np.ndarray]
) -> dict[tuple[str, str], np.ndarray]:
    """Sum per-edge estimates over each (source, target) cell's edges: (layers, heads) each.

    `cells`: (source, target) -> (L, L) bool edges of the cell."""
    out = {}
    for key, edges in cells.items():
        where = torch.from_numpy(edges).to(per_edge.device)
        out[key] = (per_edge * where).sum((-2, -1)).cpu().numpy()
    return out
