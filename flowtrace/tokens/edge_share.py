"""The share of attention edges a cut keeps, by flowtrace's count and by the paper's.

Two denominators (docs/pathways.md, "Two measures of edges kept"):

- **flowtrace's** (`edges_kept_pct`): causal (query, key) pairs whose query and key both lie at
  or after the first video token (`recipe.counted_edges`), over every layer. Only these pairs
  are ever cut, so 0% means everything a pathway could cut is cut.
- **the paper's** (`paper_kept_pct`, the reference code's `attention_amount`): *all* causal pairs
  of the prompt, T(T+1)/2 per layer, system prompt included, the diagonal too. The system prompt's
  attention is never cut, so this share never reaches 0 and is the larger of the two.

The reference reports the share over samples as the ratio of the summed counts
(`attention_amount_avg`: mean kept pairs over mean pairs), not the mean of per-sample shares;
`pooled` does the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # figures read `pooled` from here and never import torch
    import torch


def causal_pairs(seq_len: int) -> int:
    """Causal (query, key) pairs of one layer, the diagonal included: T(T+1)/2."""
    return seq_len * (seq_len + 1) // 2


def kept_shares(
    plan: Mapping[int, torch.Tensor], counted: torch.Tensor, num_layers: int
) -> tuple[float, float]:
    """(flowtrace's, the paper's) % of edges kept over all layers when `plan` cuts its edges.

    `plan`: per layer, an (L, L) bool matrix of cut (query, key) pairs; `counted`: the pairs
    flowtrace counts (`recipe.counted_edges`). A cut outside the causal triangle is no edge."""
    seq_len = counted.shape[0]
    causal = counted.new_ones(seq_len, seq_len).tril()
    cut_counted = sum(int((cut & counted).sum()) for cut in plan.values())
    cut_causal = sum(int((cut & causal).sum()) for cut in plan.values())
    ours = 100 * (1 - cut_counted / (int(counted.sum()) * num_layers))
    paper = 100 * (1 - cut_causal / (causal_pairs(seq_len) * num_layers))
    return ours, paper


def paper_from_counted(kept_pct: float, seq_len: int, video_start: int) -> float:
    """The paper's % kept for a cut that lies within flowtrace's counted pairs and keeps
    `kept_pct` % of them (the same share in every layer or over all layers alike).

    The counted pairs are the causal pairs of the T − v tokens from the first video token (at
    `video_start` = v) on: (T − v)(T − v + 1)/2 per layer."""
    counted = causal_pairs(seq_len - video_start)
    return 100 - (100 - kept_pct) * counted / causal_pairs(seq_len)


def pooled(kept_pct: np.ndarray, pairs: np.ndarray) -> float:
    """The reference's share over samples: kept pairs summed over samples, over all pairs summed
    (`attention_amount_avg`); NaN entries (samples not analysed) are left out."""
    kept_pct, pairs = np.asarray(kept_pct, float), np.asarray(pairs, float)
    ok = ~(np.isnan(kept_pct) | np.isnan(pairs))
    if not ok.any():
        return float("nan")
    return float((kept_pct[ok] * pairs[ok]).sum() / pairs[ok].sum())
