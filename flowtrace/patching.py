"""Activation patching for trace programs: what a token group carries at a layer.

A counterfactual run (the same prompt over other frames) is captured once: every decoder layer's
output (the residual stream) and its attention module's output. Then, for each (site, layer,
group), the clean run is repeated with that group's activation at that site replaced by the
counterfactual's, many patches as rows of one batched nnsight trace. Positions and layers are the
clean run's: a counterfactual changes frames, never the prompt, so every group keeps its tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nnsight
import numpy as np
import torch

from flowtrace.engine.condition import KnockoutCondition
from flowtrace.engine.fast import CleanCapture, FastEngine
from flowtrace.engine.suffix import Row
from flowtrace.program import Trace

SITES = ("residual", "attention")  # a decoder layer's output; its attention module's output
NOTHING_CUT = KnockoutCondition({})  # a patch cuts no edge: every row keeps the model's own mask


@dataclass(frozen=True)
class Capture:
    probs: torch.Tensor  # (V,) next-token probabilities
    residual: list[torch.Tensor]  # per layer: (T, d) the decoder layer's output
    attention: list[torch.Tensor]  # per layer: (T, d) the attention module's output


@dataclass(frozen=True)
class Patch:
    site: str  # one of SITES
    layer: int
    positions: torch.Tensor  # the group's token positions


def counterfactual_frames(t: Trace, name: str) -> np.ndarray:
    """The sample's frames reversed, shuffled (seeded, never the identity), or with one frame
    (seeded) replaced by the same frame of another video of the run."""
    frames = t.frames
    if name == "reversed":
        return frames[::-1].copy()
    if name == "shuffled":
        rng = t.rng("shuffled")
        order = np.arange(len(frames))
        while len(frames) > 1 and (order == np.arange(len(frames))).all():
            order = rng.permutation(len(frames))
        return frames[order].copy()
    if name == "frame_swapped":
        index = int(t.rng("frame_swapped").integers(len(frames)))
        out = frames.copy()
        out[index] = t.other_frames()[index]
        return out
    raise ValueError(f"counterfactual {name!r}: choose reversed, shuffled or frame_swapped")


@torch.no_grad()
def capture(t: Trace, inputs: dict[str, torch.Tensor]) -> Capture:
    """One run's next-token probabilities and every layer's residual and attention outputs."""
    model = t.model
    layers = t.layers
    attentions = [t.attention(i) for i in range(len(layers))]
    with model.trace(**inputs):
        residual, attention = nnsight.save([]), nnsight.save([])
        for layer, attn in zip(layers, attentions, strict=True):
            attention.append(attn.output[0][0].save())
            # A tuple before transformers 5; unpacked inline: a trace body calls no helper.
            out = layer.output
            residual.append((out[0] if isinstance(out, tuple) else out)[0].save())
        probs = model.output.logits[0, -1].float().softmax(-1).save()
    return Capture(probs, list(residual), list(attention))


@torch.no_grad()
def patched(
    t: Trace, source: Capture, patches: Sequence[Patch], batch_size: int = 32
) -> torch.Tensor:
    """Next-token probabilities (len(patches), V) of the clean run with each patch applied alone:
    the patch's group takes `source`'s activation at its site and layer."""
    model, layers = t.model, t.layers
    attentions = [t.attention(i) for i in range(len(layers))]
    out = []
    for first in range(0, len(patches), batch_size):
        chunk = list(patches[first : first + batch_size])
        rows = len(chunk)
        batch = {k: v.repeat(rows, *[1] * (v.dim() - 1)) for k, v in t.inputs.items()}
        # Resolved before the trace: its body holds only envoys, tensors and plain values.
        by_layer: dict[str, dict[int, list]] = {site: {} for site in SITES}
        for r, p in enumerate(chunk):
            value = getattr(source, p.site)[p.layer][p.positions]
            by_layer[p.site].setdefault(p.layer, []).append((r, p.positions, value))
        with model.trace(**batch):
            for index, (layer, attn) in enumerate(zip(layers, attentions, strict=True)):
                if index in by_layer["attention"]:
                    hidden = attn.output[0]
                    for r, positions, value in by_layer["attention"][index]:
                        hidden[r, positions] = value
                if index in by_layer["residual"]:
                    out = layer.output
                    hidden = out[0] if isinstance(out, tuple) else out
                    for r, positions, value in by_layer["residual"][index]:
                        hidden[r, positions] = value
            probs = model.output.logits[:, -1].float().softmax(-1).save()
        out.append(probs)
    return torch.cat(out)


@torch.no_grad()
def patched_fast(
    t: Trace, source: Capture, patches: Sequence[Patch], token_budget: int = 8192
) -> torch.Tensor:
    """`patched`'s numbers, computing only what a patch can change: a patch of a group starting
    at position p at layer l leaves positions < p at every layer, and every position below l, as
    in the clean run (causality). So each patch recomputes positions ≥ p from layer l on (its
    attention output) or l + 1 on (its residual stream), over the clean run's K/V of positions
    < p; patches of one group run as batch rows, each entering at its own layer."""
    # The pass's fast engine captured this sample's clean run already; else one capture here
    # serves every counterfactual of the sample.
    engine = t.engine if isinstance(t.engine, FastEngine) else None
    engine = engine or t.scratch.setdefault("fast_engine", FastEngine(t.loaded))
    capture = engine._clean_capture(t.inputs)
    loaded, count = t.loaded, t.loaded.num_layers
    last = capture.seq_len - 1
    out: list[torch.Tensor | None] = [None] * len(patches)
    by_start: dict[int, list[int]] = {}
    for index, patch in enumerate(patches):
        if _entry(patch) == count:  # after the last layer: only the last token's stream counts
            if bool((patch.positions == last).any()):
                final = source.residual[-1][last]
                out[index] = loaded.lm_head()(loaded.final_norm()(final)).float().softmax(-1)
            else:
                out[index] = capture.probs
            continue
        by_start.setdefault(int(patch.positions.min()), []).append(index)
    for start, indices in by_start.items():
        size = max(1, token_budget // (capture.seq_len - start))
        for first in range(0, len(indices), size):
            rows = [_as_row(i, patches[i], source, capture) for i in indices[first : first + size]]
            rows.sort(key=lambda r: r.entry)
            for row, probs in zip(rows, engine._recompute(capture, rows, False), strict=True):
                out[row.index] = probs
    return torch.stack(out)  # type: ignore[arg-type]


def _entry(patch: Patch) -> int:
    return patch.layer + 1 if patch.site == "residual" else patch.layer


def _as_row(index: int, patch: Patch, source: Capture, capture: CleanCapture) -> Row:
    """`patch` as a row of the fast engine's recompute: nothing cut, entering at `_entry`."""
    positions = patch.positions
    value = getattr(source, patch.site)[patch.layer][positions]
    start, entry = int(positions.min()), _entry(patch)
    if patch.site == "attention":
        return Row(index, NOTHING_CUT, start, entry, attends={patch.layer: (positions, value)})
    # The patched output of layer l, plus what the model adds between it and layer l + 1's
    # input (DeepStack's visual features), is the stream entering l + 1.
    delta = capture.deltas[patch.layer]
    if delta is not None:
        value = value + delta[0, positions]
    return Row(index, NOTHING_CUT, start, entry, enters=(positions, value))
