"""Reference knockout engine: one full forward per condition, conditions batched as rows.

The knockout happens inside an nnsight trace: at each chosen layer the attention module's
`attention_mask` kwarg is replaced by an additive (rows, 1, L, L) mask (causal minus the blocked
edges for rows whose window covers that layer, plain causal for the others). DESIGN §8: this equals
a plain forward wrapper exactly, and per-row masks make batching conditions exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nnsight
import torch

from flowtrace.engine import masks
from flowtrace.engine.masks import additive_mask, allowed_attention, model_allowed, per_head
from flowtrace.errors import FlowtraceError
from flowtrace.models import LoadedModel


@dataclass(frozen=True)
class KnockoutCondition:
    """Edges to cut, per layer: layer -> (L, L) bool [query, key]; in every attention head, or
    only in `heads` (head-level knockout)."""

    blocked: Mapping[int, torch.Tensor]
    heads: tuple[int, ...] | None = None

    @classmethod
    def window(
        cls, blocked: torch.Tensor, layers: Sequence[int], heads: Sequence[int] | None = None
    ) -> KnockoutCondition:
        """The same edges cut in every layer of a window (the paper's sweeps)."""
        return cls({layer: blocked for layer in layers}, None if heads is None else tuple(heads))

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.blocked))


# model_allowed and additive_mask run inside trace bodies: ship their source with remote requests.
nnsight.register(masks)


class ReferenceEngine:
    name = "reference"

    def __init__(self, loaded: LoadedModel, batch_size: int = 8) -> None:
        self.loaded = loaded
        self.batch_size = max(1, batch_size)
        self.used: set[str] = set()  # knockout paths that served the current sample

    @torch.no_grad()
    def clean(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token probabilities (V,) at the last position, float32."""
        self.used = set()
        model = self.loaded.nnsight
        with model.trace(**inputs):
            logits = model.output.logits[:, -1].save()
        return logits[0].float().softmax(-1)

    @torch.no_grad()
    def states(self, inputs: dict[str, torch.Tensor], positions: Sequence[int]) -> torch.Tensor:
        """Residual stream (layers, len(positions), hidden) after every decoder layer."""
        loaded, model = self.loaded, self.loaded.nnsight
        index = torch.as_tensor(list(positions), device=loaded.device)
        layers = list(loaded.layers(model))  # resolved here: no flowtrace object in the body
        with model.trace(**inputs):
            saved = nnsight.save([])  # made and saved inside: a server returns saved names only
            for layer in layers:
                out = layer.output
                # transformers 5 decoder layers return a tensor; older ones a tuple.
                hidden = out[0] if isinstance(out, tuple) else out
                saved.append(hidden[0, index])
        return torch.stack(saved)

    @torch.no_grad()
    def logit_lens(
        self,
        inputs: dict[str, torch.Tensor],
        norm: bool = True,
        positions: Sequence[int] = (-1,),
    ) -> torch.Tensor:
        """Next-token probabilities (layers, len(positions), V) read off each layer's states."""
        return self.unembed(self.states(inputs, positions), norm)

    @torch.no_grad()
    def unembed(self, states: torch.Tensor, norm: bool = True) -> torch.Tensor:
        """Probabilities from residual states through (the final norm and) the LM head."""
        if norm:
            states = self.loaded.final_norm()(states)
        return self.loaded.lm_head()(states).float().softmax(-1)

    @torch.no_grad()
    def knockout(
        self, inputs: dict[str, torch.Tensor], conditions: Sequence[KnockoutCondition]
    ) -> torch.Tensor:
        """Next-token probabilities (len(conditions), V) at the last token, a row per knockout."""
        self.used.add("reference")
        out = [
            self._rows(inputs, conditions[i : i + self.batch_size])[0]
            for i in range(0, len(conditions), self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def attention_mass(
        self,
        inputs: dict[str, torch.Tensor],
        groups: torch.Tensor,
        conditions: Sequence[KnockoutCondition],
    ) -> torch.Tensor:
        """Attention mass between token groups: (conditions, layers, heads, G, G).

        [.., target, source] is the attention a query of `target` puts on the keys of `source`,
        averaged over the target's queries. `groups` is a (G, L) 0/1 matrix. Reduced inside the
        trace, so no (heads, L, L) map is kept. Needs eager attention (SDPA returns no weights).
        """
        if self.loaded.attn != "eager":
            raise FlowtraceError("attention maps need the attention weights: run with --attn eager")
        _, mass = self._rows(inputs, conditions, groups.to(self.loaded.device))
        return mass

    def _rows(
        self,
        inputs: dict[str, torch.Tensor],
        chunk: Sequence[KnockoutCondition],
        groups: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        loaded, model = self.loaded, self.loaded.nnsight
        rows = len(chunk)
        device = loaded.device
        seq_len = next(iter(inputs.values())).shape[1]
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
        # Conditions share blocked matrices across layers: check and convert each one once.
        allowed: dict[int, torch.Tensor] = {}
        for c in chunk:
            for blocked in c.blocked.values():
                if id(blocked) not in allowed:
                    allowed[id(blocked)] = allowed_attention(blocked.to(device))
        allowed[id(None)] = causal
        edited = {layer for c in chunk for layer in c.blocked}
        visit = range(loaded.num_layers) if groups is not None else sorted(edited)
        batch = {k: v.repeat(rows, *[1] * (v.dim() - 1)) for k, v in inputs.items()}
        # Everything from flowtrace is resolved before the block: a trace body that runs on a
        # server may hold only the model's envoys, tensors and plain values (docs/scale.md).
        attentions = {layer: loaded.attention(model, layer) for layer in visit}
        cuts = {}
        for layer in edited:
            per_row = torch.stack([allowed[id(c.blocked.get(layer))] for c in chunk])
            if any(c.heads is not None for c in chunk):
                per_row = per_head(per_row, chunk, layer, causal, loaded.num_heads)
            cuts[layer] = per_row
        dtype = loaded.dtype
        share = groups / groups.sum(-1, keepdim=True) if groups is not None else None
        with model.trace(**batch):
            masses = nnsight.save([])
            emptied = nnsight.save([])  # layers where the model's own mask left a query no key
            # nnsight runs interventions in execution order: visit layers ascending.
            for layer in visit:
                attention = attentions[layer]
                if layer in cuts:
                    per_row = cuts[layer]
                    args, kwargs = attention.inputs
                    own = model_allowed(kwargs.get("attention_mask"))
                    if own is not None:  # the model's own mask (padding, planted routes) stays
                        per_row = per_row & (own[:, None] if per_row.dim() == 4 else own)
                        if not per_row.any(-1).all():
                            emptied.append(layer)
                    kwargs["attention_mask"] = additive_mask(per_row, dtype)
                    attention.inputs = (args, kwargs)
                if share is not None:
                    weights = attention.output[1].float()  # (rows, heads, L, L)
                    masses.append(share @ weights @ groups.T)
            logits = model.output.logits[:, -1].save()
        if emptied:
            raise FlowtraceError(
                f"a knockout at layer {emptied[0]} leaves a query with no key to attend to "
                "under the model's own attention mask"
            )
        mass = torch.stack(masses, dim=1) if masses else None
        return logits.float().softmax(-1), mass
