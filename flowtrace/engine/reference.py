"""Reference knockout engine: one full forward per condition, conditions batched as rows.

The knockout happens inside an nnsight trace: at each chosen layer the attention module's
`attention_mask` kwarg is replaced by an additive (rows, 1, L, L) mask (causal minus the blocked
edges for rows whose window covers that layer, plain causal for the others). This equals a plain
forward wrapper exactly, and per-row masks make batching conditions exact.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import nnsight
import torch

from flowtrace.engine import masks
from flowtrace.engine.condition import KnockoutCondition
from flowtrace.engine.masks import AllowedEdges, additive_mask, model_allowed, per_head
from flowtrace.errors import FlowtraceError
from flowtrace.models import LoadedModel

# model_allowed and additive_mask run inside trace bodies: ship their source with remote requests.
nnsight.register(masks)


class Launched:
    """Knockouts started on the device (`engine.launch`): `result()` gives their rows, (C, V).

    `used` says which paths served them and `note` why they left the fast path ("" if they did
    not), both known once `result()` has returned.
    """

    def __init__(self, probs: torch.Tensor | None, used: set[str] | None = None, note: str = ""):
        self._probs, self.used, self.note = probs, set(used or ()), note

    def result(self) -> torch.Tensor:
        if self._probs is None:
            self._probs = self._finish()
        return self._probs

    def _finish(self) -> torch.Tensor:
        raise NotImplementedError


class ReferenceEngine:
    name = "reference"
    # Why a sample's knockouts left the fast path (FastEngine sets it); "" here: nothing to leave.
    fallback_reason = ""

    def __init__(self, loaded: LoadedModel, batch_size: int = 8) -> None:
        self.loaded = loaded
        self.batch_size = max(1, batch_size)
        self.used: set[str] = set()  # knockout paths that served the current sample
        layer = loaded.layers(loaded.model)[0]
        params = inspect.signature(layer.forward).parameters
        # transformers renamed `past_key_values` to `cache` (5.2x); the model's forward takes the
        # cache under the same name as its decoder layers.
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

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

    def launch(
        self, inputs: dict[str, torch.Tensor], conditions: Sequence[KnockoutCondition]
    ) -> Launched:
        """`knockout`, as a started call (the fast engine's returns before the device is done)."""
        return Launched(self.knockout(inputs, conditions), {"reference"} if conditions else None)

    @torch.no_grad()
    def generate(
        self,
        inputs: dict[str, torch.Tensor],
        conditions: Sequence[KnockoutCondition],
        max_new_tokens: int,
        stop_ids: Sequence[int] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy continuations under each knockout: the first step's probabilities (C, V), as
        `knockout` gives them, and the generated ids (C, max_new_tokens), -1 after a stop id.

        A generated token is cut from what the last prompt token is cut from (its row of the
        mask) and sees every token generated before it, as the reference code's generation.
        Each step is one nnsight trace over the K/V cache of all rows of a chunk.
        """
        if getattr(self.loaded.model.config, "flowtrace_plant", None):
            raise FlowtraceError(
                "greedy generation does not run on a planted model (its routes are built for the "
                "prompt alone); pass generate=0 for the first-token scores alone"
            )
        self.used.add("reference")
        first, tokens = [], []
        for i in range(0, len(conditions), self.batch_size):
            chunk = conditions[i : i + self.batch_size]
            probs, ids = self._generate_rows(inputs, chunk, max_new_tokens, stop_ids)
            first.append(probs)
            tokens.append(ids)
        if not first:
            return torch.zeros(0), torch.zeros(0, max_new_tokens, dtype=torch.long)
        return torch.cat(first), torch.cat(tokens)

    def _generate_rows(
        self,
        inputs: dict[str, torch.Tensor],
        chunk: Sequence[KnockoutCondition],
        max_new_tokens: int,
        stop_ids: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loaded, model = self.loaded, self.loaded.nnsight
        keep: dict = {}
        probs, _ = self._rows(inputs, chunk, keep=keep)
        cache, last_rows = keep["cache"], keep["last_rows"]
        rows, device = len(chunk), loaded.device
        seq_len = next(iter(inputs.values())).shape[1]
        stop = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
        out = torch.full((rows, max_new_tokens), -1, dtype=torch.long)
        done = torch.zeros(rows, dtype=torch.bool, device=device)
        token = probs.argmax(-1).to(device)
        attentions = {layer: loaded.attention(model, layer) for layer in sorted(last_rows)}
        for step in range(max_new_tokens):
            out[:, step] = torch.where(done, -1, token).cpu()
            done |= torch.isin(token, stop)
            if bool(done.all()) or step + 1 == max_new_tokens:
                break
            keys = seq_len + step + 1
            # The new token's row: the last prompt token's cuts, every generated token allowed.
            masks = {
                layer: torch.cat([last, last.new_ones(*last.shape[:-1], step + 1)], dim=-1)
                for layer, last in last_rows.items()
            }
            # The step's position as generate() gives it (M-RoPE models derive theirs from it).
            with model.trace(
                input_ids=token[:, None],
                cache_position=torch.tensor([keys - 1], device=device),
                use_cache=True,
                **{self._cache_kwarg: cache},
            ):
                for layer, attention in attentions.items():
                    args, kwargs = attention.inputs
                    kwargs["attention_mask"] = additive_mask(masks[layer], loaded.dtype)
                    attention.inputs = (args, kwargs)
                logits = model.output.logits[:, -1].save()
            token = logits.argmax(-1)
        return probs, out

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
            raise FlowtraceError("attention maps need the attention weights: run with attn=eager")
        _, mass = self._rows(inputs, conditions, groups.to(self.loaded.device))
        return mass

    def _rows(
        self,
        inputs: dict[str, torch.Tensor],
        chunk: Sequence[KnockoutCondition],
        groups: torch.Tensor | None = None,
        keep: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token probabilities of a chunk of conditions, one row each (and group masses).

        `keep` (a dict) receives the K/V cache and, per cut layer, the last query's allowed keys,
        which a greedy continuation extends (`generate`).
        """
        loaded, model = self.loaded, self.loaded.nnsight
        rows = len(chunk)
        device = loaded.device
        seq_len = next(iter(inputs.values())).shape[1]
        # Conditions share blocked matrices across layers: check and convert each one once.
        allowed = AllowedEdges(seq_len, device)
        for c in chunk:
            for blocked in c.blocked.values():
                allowed(None, blocked)
        allowed.check()
        causal = allowed(None, None)
        edited = {layer for c in chunk for layer in c.blocked}
        # Per (layer, site): the rows' site edits, resolved here (positions, values on the device).
        site_edits: dict[tuple[int, str], list] = {}
        for r, c in enumerate(chunk):
            for e in c.edits:
                value = None if e.value is None else e.value.to(device, loaded.dtype)
                place = (r, e.positions.to(device), e.scale, value)
                site_edits.setdefault((e.layer, e.site), []).append(place)
        touched = edited | {layer for layer, _ in site_edits}
        visit = range(loaded.num_layers) if groups is not None else sorted(touched)
        batch = {k: v.repeat(rows, *[1] * (v.dim() - 1)) for k, v in inputs.items()}
        # Everything from flowtrace is resolved before the block: a trace body that runs on a
        # server may hold only the model's envoys, tensors and plain values (docs/scale.md).
        attentions = {layer: loaded.attention(model, layer) for layer in visit}
        modules = {key: loaded.site(model, *key) for key in site_edits}
        # Within a layer nnsight needs the attention output, then the MLP's, then the layer's.
        order = [(layer, site) for layer in visit for site in ("attention", "mlp", "residual")]
        edit_order = [key for key in order if key in site_edits]
        cuts = {}
        for layer in edited:
            per_row = torch.stack([allowed(None, c.blocked.get(layer)) for c in chunk])
            if any(c.heads is not None for c in chunk):
                per_row = per_head(per_row, chunk, layer, causal, loaded.num_heads)
            cuts[layer] = per_row
        dtype = loaded.dtype
        share = groups / groups.sum(-1, keepdim=True) if groups is not None else None
        extra = {}
        if keep is not None:
            from transformers import DynamicCache

            keep["cache"] = DynamicCache()  # filled in place by the pass
            extra = {"use_cache": True, self._cache_kwarg: keep["cache"]}
        with model.trace(**batch, **extra):
            masses = nnsight.save([])
            emptied = nnsight.save([])  # layers where the model's own mask left a query no key
            last_rows = nnsight.save({})
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
                    last_rows[layer] = per_row[..., -1:, :]
                if share is not None:
                    weights = attention.output[1].float()  # (rows, heads, L, L)
                    masses.append(share @ weights @ groups.T)
                for key in edit_order:
                    if key[0] != layer:
                        continue
                    out = modules[key].output
                    hidden = out[0] if isinstance(out, tuple) else out
                    for r, positions, scale, value in site_edits[key]:
                        old = hidden[r, positions]
                        new = old * scale if scale else torch.zeros_like(old)
                        hidden[r, positions] = new if value is None else new + value
            logits = model.output.logits[:, -1].save()
        if emptied:
            raise FlowtraceError(
                f"a knockout at layer {emptied[0]} leaves a query with no key to attend to "
                "under the model's own attention mask"
            )
        if keep is not None:
            keep["last_rows"] = dict(last_rows)
        mass = torch.stack(masses, dim=1) if masses else None
        return logits.float().softmax(-1), mass
