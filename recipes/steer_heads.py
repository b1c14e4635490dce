"""Steering chosen heads: their outputs scaled over a layer range, and what that does to the
answer (CircuitProbe, arXiv 2507.19420, amplifies temporal heads inside the logit lens's
"consolidation interval").

A head's output is its slice of the attention module's output projection input (o_proj in
Llama and Qwen2 decoders): scaling the slice by s scales the head's contribution by s and leaves
every other head alone. Each scale is one condition; the scales run as rows of one batched
forward. Records p(answer) (the clean prediction), p(true), whether the answer is right and
whether it changed, per scale; accuracy change is `correct` against the store's `clean_correct`.

Edit HEADS to the (layer, head) pairs to steer (e.g. those recipes/temporal_heads.py ranks
highest) and LAYERS to the range they are steered in (pairs outside it are left alone).

The intervention API's Steer edits a token group's whole attention output, not one head's, so
this program writes a plain nnsight trace (docs/programs.md, "Plain nnsight traces").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flowtrace.data import SampleError
from flowtrace.program import Trace, TraceProgram

HEADS: list[tuple[int, int]] = [(1, 0), (1, 1), (2, 0), (2, 1)]  # (layer, head)
LAYERS = range(1, 3)
SCALES = (0.0, 0.5, 1.5, 2.0)
# The attention module's output projection, by family: its input is the heads' outputs.
OUT_PROJECTIONS = ("o_proj", "out_proj", "wo", "dense")


def steered_heads(t: Trace, heads: Sequence[tuple[int, int]], layers: range) -> dict[int, list]:
    """The chosen heads inside `layers`, by layer; refused where the model lacks one."""
    chosen: dict[int, list[int]] = {}
    for layer, head in heads:
        if not (0 <= layer < t.num_layers and 0 <= head < t.loaded.num_heads):
            raise SampleError(
                f"steer_heads: head ({layer}, {head}) is not in this model (layers "
                f"0-{t.num_layers - 1}, heads 0-{t.loaded.num_heads - 1}); edit HEADS"
            )
        if layer in layers:
            chosen.setdefault(layer, []).append(head)
    if not chosen:
        raise SampleError(f"steer_heads: no head of HEADS lies in LAYERS {layers}; edit them")
    return chosen


def out_projection(t: Trace, layer: int):
    """(nnsight envoy, torch module) of the attention's output projection at `layer`."""
    torch_attention = t.loaded.attention(t.loaded.model, layer)
    for name in OUT_PROJECTIONS:
        if isinstance(getattr(torch_attention, name, None), torch.nn.Linear):
            return getattr(t.attention(layer), name), getattr(torch_attention, name)
    raise SampleError(
        f"steer_heads: the attention module {type(torch_attention).__name__} has none of "
        f"{', '.join(OUT_PROJECTIONS)}; add its output projection's name to OUT_PROJECTIONS"
    )


def head_factors(width: int, num_heads: int, heads: list[int], scales) -> torch.Tensor:
    """(rows, width): 1 everywhere but the chosen heads' slices, scaled by each row's scale."""
    size = width // num_heads
    factors = torch.ones(len(scales), width)
    for head in heads:
        factors[:, head * size : (head + 1) * size] = torch.tensor(scales, dtype=torch.float)[
            :, None
        ]
    return factors


def steer_heads(t: Trace):
    chosen = steered_heads(t, HEADS, LAYERS)
    rows = len(SCALES)
    batch = {k: v.repeat(rows, *[1] * (v.dim() - 1)) for k, v in t.inputs.items()}
    # Resolved before the trace: its body holds only envoys, tensors and plain values.
    edits = []
    for layer in sorted(chosen):
        envoy, module = out_projection(t, layer)
        factors = head_factors(module.in_features, t.loaded.num_heads, chosen[layer], SCALES)
        edits.append((envoy, factors.to(module.weight.device, module.weight.dtype)[:, None]))
    model = t.model
    with model.trace(**batch):
        for envoy, factors in edits:  # in layer order, as nnsight runs them
            envoy.input = envoy.input * factors
        probs = model.output.logits[:, -1].float().softmax(-1).save()
    answer = probs.argmax(-1)
    labels = {"scale": list(SCALES)}
    clean = float(t.clean_probs[t.answer_id])
    p = probs[:, t.answer_id]
    return {
        "p_answer": (("scale",), p),
        "rel_change": (("scale",), 100 * (p - clean) / clean),
        "p_true": (("scale",), probs[:, t.true_id]),
        "correct": (("scale",), answer == t.true_id),
        "flipped": (("scale",), answer != t.answer_id),
        "coords": labels,
    }


recipe = TraceProgram(
    "steer_heads",
    "Chosen heads' outputs scaled over a layer range: p(answer) and accuracy per scale",
    steer_heads,
)
