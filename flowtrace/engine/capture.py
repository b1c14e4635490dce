"""The clean pass as the fast engine's recompute reads it: each layer's input and output, the
K/V cache, the position kwargs and each layer's own mask, captured in one nnsight trace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from flowtrace.engine.masks import model_allowed
from flowtrace.engine.suffix import shared_masks
from flowtrace.models import LoadedModel


@dataclass
class CleanCapture:
    """What the clean pass leaves for the recompute, for one input."""

    # The input tensors themselves: held, so no later sample can reuse their memory and be
    # taken for them; compared by identity.
    source: dict[str, torch.Tensor]
    probs: torch.Tensor  # (V,) float32 at the last position
    inputs: list[torch.Tensor]  # per layer: (1, T, d) residual stream entering the layer
    final: torch.Tensor  # (1, T, d) the last decoder layer's output
    deltas: list[torch.Tensor | None]  # per layer: next input − this output, if not 0 (DeepStack)
    keys: list[torch.Tensor]  # per layer: (1, kv_heads, T, head_dim) as the attention saw them
    values: list[torch.Tensor]
    layer_kwargs: dict[str, Any]  # layer 0's call kwargs that carry positions
    # per layer: (T, T) bool edges the model's own mask lets through; None: plain causal. Layers
    # with equal masks share one tensor.
    own_masks: list[torch.Tensor | None]

    @property
    def seq_len(self) -> int:
        return self.inputs[0].shape[1]

    def stream(self, layer: int) -> torch.Tensor:
        """(1, T, d) the residual stream entering `layer` (the last layer's output past it)."""
        return self.inputs[layer] if layer < len(self.inputs) else self.final


@torch.no_grad()
def capture_clean(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor], cache_kwarg: str
) -> CleanCapture:
    """Run the clean pass of `inputs` in one trace; `cache_kwarg` is the name the decoder
    layers take their K/V cache under."""
    from transformers import DynamicCache

    model = loaded.nnsight
    cache = DynamicCache()
    layer_in, layer_out, own = [], [], []
    first_kwargs: dict[str, Any] = {}
    with model.trace(**inputs, use_cache=True, **{cache_kwarg: cache}):
        for index, layer in enumerate(loaded.layers(model)):
            args, kwargs = layer.inputs
            hidden = args[0] if args else kwargs["hidden_states"]
            layer_in.append(hidden.save())
            mask = model_allowed(kwargs.get("attention_mask"))
            own.append(None if mask is None else mask[0].save())
            if index == 0:
                for name in ("position_ids", "cache_position"):
                    if kwargs.get(name) is not None:
                        first_kwargs[name] = kwargs[name].save()
                if kwargs.get("position_embeddings") is not None:
                    first_kwargs["position_embeddings"] = tuple(
                        t.save() for t in kwargs["position_embeddings"]
                    )
            out = layer.output
            layer_out.append((out[0] if isinstance(out, tuple) else out).save())
        logits = model.output.logits[:, -1].save()
    # Next input − this output: nonzero only where the model adds to the stream between
    # layers (DeepStack). A layer that gets its predecessor's output tensor itself needs no
    # subtraction; the rest are read back in one sync, not one per layer.
    pairs = zip(layer_in[1:], layer_out[:-1], strict=True)
    differences = [None if after is before else after - before for after, before in pairs]
    computed = [d for d in differences if d is not None]
    nonzero = iter(torch.stack([d.any() for d in computed]).tolist() if computed else [])
    deltas = [None if d is None or not next(nonzero) else d for d in differences]
    deltas.append(None)
    return CleanCapture(
        source=dict(inputs),
        probs=logits[0].float().softmax(-1),
        inputs=list(layer_in),
        final=layer_out[-1],
        deltas=deltas,
        keys=[cache.layers[i].keys for i in range(len(layer_in))],
        values=[cache.layers[i].values for i in range(len(layer_in))],
        layer_kwargs=dict(first_kwargs),
        own_masks=shared_masks(own, layer_in[0].shape[1]),
    )


def same_inputs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether `a` and `b` hold the very same tensors (identity, not equality)."""
    return a.keys() == b.keys() and all(a[k] is b[k] for k in a)
