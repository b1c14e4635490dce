"""Attribution patching: its gradient against finite differences of a plain forward, and its
ranking of (layer, head, group pair) cells against exact knockout on the trained toy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from flowtrace.data import read_samples, sample_frames
from flowtrace.engine import KnockoutCondition, make_engine
from flowtrace.models import load_model
from flowtrace.pathways.attribution import cell_attribution, edge_attribution, log_odds
from flowtrace.pipeline.options import resolve_data
from flowtrace.tokens.edges import blocked_edges


@pytest.fixture(scope="module")
def toy():
    loaded = load_model("toy", device="cpu")
    samples = read_samples(resolve_data("toy"))
    return loaded, make_engine("fast", loaded), samples


def prepared(loaded, sample):
    frames = sample_frames(sample, loaded.adapter.default_frames, loaded.adapter)
    return loaded.adapter.prepare(loaded, sample, frames)


def plain_log_odds(model, inputs, layer: int, edges: np.ndarray, bias: float, target: int) -> float:
    """Log-odds of `target` with `bias` added to the scores of `edges` at `layer` in every head:
    a pre-hook swaps in a hand-built additive mask, then one plain forward (no flowtrace)."""
    seq_len = inputs["input_ids"].shape[1]
    mask = torch.zeros(seq_len, seq_len)
    mask[~torch.ones(seq_len, seq_len, dtype=torch.bool).tril()] = torch.finfo(torch.float32).min
    mask[torch.from_numpy(edges)] += bias

    def swap(module, args, kwargs):
        kwargs["attention_mask"] = mask[None, None]
        return args, kwargs

    attention = model.model.language_model.layers[layer].self_attn
    handle = attention.register_forward_pre_hook(swap, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1].double()
    finally:
        handle.remove()
    return float(log_odds(logits, target))


def test_gradient_equals_finite_differences_of_a_plain_forward(toy):
    loaded, engine, samples = toy
    item = prepared(loaded, samples[1])
    clean = engine.clean(item.inputs)
    target = int(clean.argmax())
    per_edge = edge_attribution(engine, item.inputs, target).sum(1)  # over heads
    for layer, expr in [(1, "question -> last"), (0, "frame_7 -> last"), (3, "video -> query")]:
        edges = blocked_edges(expr, item.layout)
        estimate = float(per_edge[layer][torch.from_numpy(edges)].sum())
        step = 0.05
        up = plain_log_odds(loaded.model, item.inputs, layer, edges, step, target)
        down = plain_log_odds(loaded.model, item.inputs, layer, edges, -step, target)
        slope = (up - down) / (2 * step)  # d log-odds / d (bias on every edge of the cell)
        # AtP's cut estimate is minus that slope (gate w = exp(bias) from 1 to 0, first order).
        assert estimate == pytest.approx(-slope, rel=0.02, abs=1e-4), (layer, expr)
    assert (
        abs(
            float(
                per_edge[1][torch.from_numpy(blocked_edges("question -> last", item.layout))].sum()
            )
        )
        > 1e-2
    )


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


def test_ranking_of_head_cells_agrees_with_exact_knockout(toy):
    """On the trained toy, per (layer, head, group pair) cell into the query and the last token
    (576 cells a sample): AtP's estimated change of the answer's log-odds against the exact one
    (fast engine, one head's edges of the cell cut at one layer). Measured Spearman: 0.94, 0.91,
    0.94 on these three samples; the test asks >= 0.85. What AtP gets wrong is the few cells
    where one head's attention sits almost wholly on the cut group (sample 40's strongest exact
    cell, -17.7 in log-odds, is ranked among AtP's weakest): the search checks every cut by
    exact knockout, so such a cell is kept however AtP ranks it."""
    loaded, engine, samples = toy
    for sample in (samples[0], samples[20], samples[40]):
        item = prepared(loaded, sample)
        clean = engine.clean(item.inputs)
        target = int(clean.argmax())
        groups = [f"frame_{t}" for t in range(8)] + ["query", "prompt_tail"]
        cells = {(g, "last"): blocked_edges(f"{g} -> last", item.layout) for g in groups}
        cells |= {
            (f"frame_{t}", "query"): blocked_edges(f"frame_{t} -> query", item.layout)
            for t in range(8)
        }
        estimates = cell_attribution(edge_attribution(engine, item.inputs, target), cells)
        keys, conditions, est = [], [], []
        for pair, edges in cells.items():
            for layer in range(loaded.num_layers):
                for head in range(loaded.num_heads):
                    keys.append((layer, head, pair))
                    conditions.append(KnockoutCondition({layer: torch.from_numpy(edges)}, (head,)))
                    est.append(estimates[pair][layer, head])
        probs = engine.knockout(item.inputs, conditions).double()
        exact = (log_odds(probs.log(), target) - log_odds(clean.double().log(), target)).numpy()
        est = np.asarray(est)
        rho = spearman(est, exact)
        assert rho >= 0.85, (sample.id, rho)
        # Not a constant ranking: the cells' exact effects span orders of magnitude.
        assert exact.min() < -1 and np.abs(exact).max() > 1e3 * np.median(np.abs(exact))
