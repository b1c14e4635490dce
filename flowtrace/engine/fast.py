"""Fast exact knockout engine: recompute only what a knockout can change.

Causality gives two invariants. If every blocked query sits at position ≥ p, positions < p keep
their clean hidden states and K/V at every layer; and every position enters the first blocked layer
l0 with its clean residual stream. So a condition needs only positions ≥ p through layers ≥ l0,
attending to the clean pass's K/V of positions < p plus their own recomputed K/V.

The clean pass runs in an nnsight trace and captures each decoder layer's input, output and first
call kwargs, plus the K/V cache. The recompute then calls the decoder layers directly: it is not a
forward of any module nnsight wraps (rows enter at different layers, on a suffix of the sequence,
over a prefix cache shared by every row), so nnsight has no trace to express it in.

Conditions that share p run as rows of one batch; rows enter the batch at their own l0, so no row
recomputes a clean layer. The shared prefix K/V is broadcast into each layer's attention and
dropped after it, never stored per row.

A self-check guards the structural assumptions: a no-op condition must give back the clean pass
(once per model), and every kind of shortcut a sample takes (its first cut query, its first cut
layer, the pattern of edge sets over its layers, the flat or batched path, head-level or not) is
compared with a full forward the first time that kind is seen. Where a check fails, the sample and
every later one run on the reference path, with a FastEngineFallback warning and the reason in
`fallback_reason`; where a request needs what the shortcut cannot give (attention weights), the
reference path runs too.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from flowtrace.engine.compiled import (
    COMPILE_ENV,
    COMPILED_PATHS,
    compile_default,
    compiled_twins,
    plain_twin,
)
from flowtrace.engine.condition import KnockoutCondition
from flowtrace.engine.masks import AllowedEdges, additive_mask, model_allowed
from flowtrace.engine.reference import Launched, ReferenceEngine
from flowtrace.engine.self_check import (
    HALF_PRECISION_TOLERANCE,
    SELF_CHECK_TOLERANCE,
    describe_kinds,
    shortcut_kinds,
)
from flowtrace.engine.suffix import (
    PrefixCache,
    Row,
    apply_edits,
    chunks_by_tokens,
    edit_output,
    first_blocked_query,
    first_tokens,
    forks,
    place_edit,
    placed_edits,
    shared_masks,
    side_by_side_kwargs,
    suffix_kwargs,
)
from flowtrace.models import LoadedModel

# Rows × recomputed positions per batch; bounds the activations (the MLP's intermediate dominates).
DEFAULT_TOKEN_BUDGET = {"cuda": 16384, "cpu": 4096}
# Short suffixes of several rows go side by side in one sequence, up to this many tokens: their
# attention to each other's (masked) blocks is the price, small next to the MLPs at this size.
FLAT_TOKENS = 4096


# Per model (held weakly), per engine settings: the kinds of shortcut confirmed so far.
VERIFIED: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, set[tuple]]] = (
    weakref.WeakKeyDictionary()
)


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


class FastEngineFallback(UserWarning):
    """The fast engine's self-check failed: knockouts run on the reference path instead."""


class FastEngine(ReferenceEngine):
    """Same numbers as ReferenceEngine.knockout, computing only what each condition changes."""

    name = "fast"

    def __init__(
        self,
        loaded: LoadedModel,
        batch_size: int = 8,
        token_budget: int | None = None,
        compile: bool | None = None,
    ) -> None:
        super().__init__(loaded, batch_size)
        self.token_budget = token_budget or DEFAULT_TOKEN_BUDGET.get(loaded.device.type, 4096)
        # Recompute through torch.compile'd twins of the decoder layers (None: on for CUDA).
        self.compile = compile_default(loaded) if compile is None else compile
        self.compiled_paths = COMPILED_PATHS  # which recompute paths call compiled layers
        # The decoder layers without nnsight's per-instance wrappers (what torch.compile needs,
        # engine/compiled.py), called compiled or not, and their compiled versions; made on
        # first use.
        self._twins: list[Any] | None = None
        self._compiled: list[Any] | None = None
        # Knockouts run on a stream of their own on CUDA, so the next sample's clean pass (on
        # the default stream, with the model's own host syncs) runs beside them (`launch`).
        self._stream = torch.cuda.Stream(loaded.device) if loaded.device.type == "cuda" else None
        self.compiled_calls = 0  # layer calls that ran compiled, since the engine was made
        self._capture: CleanCapture | None = None
        self.flat_tokens: int | None = None  # side-by-side limit; None: decided per group
        self._broken = ""  # why the shortcut is off for this model ("" while it holds)
        self.fallback_reason = ""  # why this sample's knockouts fell back ("" when none did)
        self.checked_rows = 0  # rows the self-check has re-run on the reference path, in all
        # Recomputed (token, layer) pairs and (query, key) pairs since the last clean pass:
        # the benchmark turns them into FLOPs.
        self.work = {"token_layers": 0, "query_keys": 0}

    @property
    def _verified(self) -> set[tuple]:
        """Kinds of shortcut a full forward has confirmed (self_check.shortcut_kinds) for this
        model under these settings: every engine on the model in this process shares them (a
        pass's next run, a notebook's next cell), so each kind costs its full forward once."""
        settings = (self.compile, tuple(self.compiled_paths), self.flat_tokens, self.token_budget)
        return VERIFIED.setdefault(self.loaded.model, {}).setdefault(settings, set())

    # -- clean pass -------------------------------------------------------------------------

    @torch.no_grad()
    def clean(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.used = set()
        self.fallback_reason = ""
        self.work = dict.fromkeys(self.work, 0)
        return self.capture(inputs).probs

    @property
    def cache_kwarg(self) -> str:
        """The name the decoder layers take their K/V cache under (it changed in transformers 5)."""
        return self._cache_kwarg

    @torch.no_grad()
    def capture(self, inputs: dict[str, torch.Tensor]) -> CleanCapture:
        """The clean pass of `inputs` as the recompute reads it, made once per input."""
        if self._capture is not None and _same_inputs(self._capture.source, inputs):
            return self._capture
        self._capture = None  # free the last sample's capture before making this one
        from transformers import DynamicCache

        loaded, model = self.loaded, self.loaded.nnsight
        cache = DynamicCache()
        layer_in, layer_out, own = [], [], []
        first_kwargs: dict[str, Any] = {}
        with model.trace(**inputs, use_cache=True, **{self._cache_kwarg: cache}):
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
        self._capture = CleanCapture(
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
        return self._capture

    # -- knockouts --------------------------------------------------------------------------

    @torch.no_grad()
    def knockout(
        self, inputs: dict[str, torch.Tensor], conditions: Sequence[KnockoutCondition]
    ) -> torch.Tensor:
        return self.launch(inputs, conditions).result()

    @torch.no_grad()
    def launch(
        self, inputs: dict[str, torch.Tensor], conditions: Sequence[KnockoutCondition]
    ) -> Launched:
        """Queue every condition's recompute on the device and return at once; `result()`
        reads the rows back, runs the self-check and falls back where it fails. Until then
        the host is free (the pass runs the next sample's clean pass meanwhile)."""
        if not conditions:
            return Launched(torch.zeros(0))
        capture = self.capture(inputs)
        seq_len = capture.seq_len
        out: list[torch.Tensor | None] = [None] * len(conditions)
        rows: list[Row] = []
        first_rows: dict[int, int | None] = {}  # sweeps share matrices: scan each one once
        for index, condition in enumerate(conditions):
            start = first_blocked_query(condition, first_rows)
            if start is None:  # nothing cut: the clean pass is the answer
                out[index] = capture.probs
            else:
                rows.append(Row(index, condition, start, condition.entry))
        if not rows:
            return Launched(torch.stack(out))  # type: ignore[arg-type]
        if not self._broken:
            self._check_noop(capture)
        if self._broken:
            return self._launch_fallback(inputs, conditions, self._broken)
        rows.sort(key=lambda r: r.entry)
        flat_limit = FLAT_TOKENS if self.flat_tokens is None else self.flat_tokens

        def lies_flat(row: Row) -> bool:
            # Short suffixes (→ last, → question) go side by side whatever their start; long
            # ones (cross-frame) go as batch rows of one start, where a prefix copy is cheap.
            suffix = seq_len - row.start
            return suffix <= flat_limit and (self.flat_tokens is not None or 4 * suffix <= seq_len)

        # Flat chunks (many short layer calls, bound by how fast the host queues them) first,
        # batched ones (long calls) last: the device queue holds a bounded number of kernels,
        # and ending on long ones leaves the most device work queued when `launch` returns,
        # the time the host has for the next sample's clean pass.
        flat_rows = [r for r in rows if lies_flat(r)]
        chunks = [(c, True) for c in chunks_by_tokens(flat_rows, seq_len, flat_limit)]
        by_start: dict[int, list[Row]] = {}
        for row in rows:
            if not lies_flat(row):
                by_start.setdefault(row.start, []).append(row)
        for start, group in by_start.items():
            size = max(1, self.token_budget // (seq_len - start))
            chunks += [(group[i : i + size], False) for i in range(0, len(group), size)]
        paths: dict[int, tuple[bool, bool]] = {}  # row index -> (side by side, begun as a copy)
        stream = self._stream
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(self.loaded.device))  # the capture
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            allowed = AllowedEdges(seq_len, self.loaded.device)
            forked: set[int] = set()
            for chunk, flat in chunks:
                probs = self._recompute(capture, chunk, flat, allowed, forked)
                for row, p in zip(chunk, probs, strict=True):
                    out[row.index] = p
                    paths[row.index] = (flat, row.index in forked)
            stacked = torch.stack(out)  # type: ignore[arg-type]
            done = None
            if stream is not None:
                done = torch.cuda.Event()
                done.record(stream)
        return PendingKnockout(
            self, inputs, conditions, capture, rows, paths, out, stacked, allowed, done
        )

    def _launch_fallback(
        self,
        inputs: dict[str, torch.Tensor],
        conditions: Sequence[KnockoutCondition],
        reason: str,
    ) -> Launched:
        probs = self._fall_back(inputs, conditions, reason)
        return Launched(probs, {"reference"}, reason)

    def _recompute(
        self,
        capture: CleanCapture,
        rows: Sequence[Row],
        flat: bool,
        allowed: AllowedEdges | None = None,
        forked: set[int] | None = None,
    ) -> torch.Tensor:
        """Next-token probabilities of `rows`, recomputed together.

        Row r joins at its entry layer with the clean residual stream there (a residual edit of
        the layer before applied), from its own start on. Flat: the rows' suffixes lie
        side by side in one sequence after one shared prefix (a block mask keeps rows apart), so
        the prefix K/V is never repeated. Batched (one start): the rows are batch rows, each
        attending a broadcast copy of the prefix for one layer. On either path a row that cuts
        what an earlier one cuts up to some layer joins there as a copy of its stream
        (`suffix.forks`; their `index` is added to `forked`).

        Residual edits are written between layer calls, so their rows run as knockout rows do.
        Attention and MLP edits go in through a forward hook on the original module for that
        layer's call, and a chunk holding one runs every layer uncompiled.
        Dynamo does not guard on module hooks (`skip_nnmodule_hook_guards`), so a compiled twin
        traced before the hook was added may skip it silently; editing the attention output
        without a hook would mean splitting each model family's decoder layer. Rows without
        attention or MLP edits run compiled where `compile` is on, with no hook.
        """
        loaded = self.loaded
        device, seq_len = loaded.device, capture.seq_len
        # Rows that begin as a copy of an earlier row's stream, further on (suffix.forks): the
        # rows go in the order they join, and their answers back in the caller's order at the end.
        copies = forks(rows, loaded.num_layers)
        if forked is not None:
            forked.update(rows[i].index for i in copies)
        joins = [copies[i][1] if i in copies else r.entry for i, r in enumerate(rows)]
        order = sorted(range(len(rows)), key=joins.__getitem__)
        place = {old: new for new, old in enumerate(order)}
        rows, joins = [rows[i] for i in order], [joins[i] for i in order]
        parent = {place[i]: place[j] for i, (j, _) in copies.items()}
        prefix_len = max(r.start for r in rows)
        lengths = [seq_len - r.start for r in rows]
        offsets = [sum(lengths[:i]) for i in range(len(rows))]
        # (own mask, blocked) -> allowed edges; sweeps share both across rows and layers.
        checked_here = allowed is None
        edges = AllowedEdges(seq_len, device) if allowed is None else allowed

        # Head-level conditions need a mask per head: (heads, Q, K) flat, (R, heads, S, T) batched.
        heads = loaded.num_heads if any(r.condition.heads is not None for r in rows) else 0
        per_head = (heads,) if heads else ()
        if flat:
            total = sum(lengths)
            shape = (*per_head, total, prefix_len + total)
            kwargs = side_by_side_kwargs(capture.layer_kwargs, [r.start for r in rows])
        else:
            shape = (len(rows), *per_head, lengths[0], seq_len)
            kwargs = suffix_kwargs(capture.layer_kwargs, prefix_len)
        masks = torch.zeros(shape, dtype=torch.bool, device=device)
        edits = placed_edits(rows, offsets, flat, device, loaded.dtype)
        hooked = any(site != "residual" for site, _ in edits)
        originals = loaded.layers(loaded.model)
        # Attention and MLP edits go in through hooks on the model's own modules; the rest call
        # the twins, compiled on the paths where compiling pays (engine/compiled.py).
        if hooked:
            eager = layers = originals
        else:
            eager = self._plain_layers(originals)
            compiled = self.compile and ("flat" if flat else "batched") in self.compiled_paths
            layers = self._compiled_layers(eager) if compiled else eager
        width = capture.inputs[0].shape[-1]
        hidden = capture.inputs[0].new_empty((1, 0, width) if flat else (0, lengths[0], width))
        current: list[tuple[int, int]] = []  # (own, blocked) ids each joined row's mask holds
        joined = tokens = 0

        def join(index: int) -> None:
            nonlocal hidden, joined, tokens
            while joined < len(rows) and joins[joined] == index:
                row = rows[joined]
                if joined in parent:
                    p = parent[joined]
                    o, n = (offsets[p], lengths[p]) if flat else (p, 1)
                    fresh = hidden[:, o : o + n] if flat else hidden[o : o + n]
                else:
                    fresh = capture.stream(index)[:, row.start :]
                    before = [
                        e for e in row.condition.edits if e.site == "residual" and e.entry == index
                    ]
                    if before:  # the previous layer's output edited: the stream it enters with
                        delta = capture.deltas[index - 1]
                        fresh = (
                            fresh - delta[:, row.start :] if delta is not None else fresh.clone()
                        )
                        places = [
                            place_edit(e, 0, 0, -row.start, device, loaded.dtype) for e in before
                        ]
                        apply_edits(fresh, places)
                        if delta is not None:
                            fresh = fresh + delta[:, row.start :]
                hidden = torch.cat([hidden, fresh], dim=1 if flat else 0)
                current.append((-1, -1))
                joined += 1
                tokens += fresh.shape[1]

        for index in range(joins[0], loaded.num_layers):
            join(index)
            own = capture.own_masks[index]
            for i, r in enumerate(rows[:joined]):
                blocked = r.condition.blocked.get(index)
                key = (id(own), id(blocked))
                if current[i] == key:  # only rows entering or leaving a cut rewrite their mask
                    continue
                current[i] = key
                cut = edges(own, blocked)[r.start :]
                only = r.condition.heads if blocked is not None else None
                # A head-level row: the cut in its heads, its uncut mask in the others.
                for chosen, a in [(slice(None), edges(own, None)[r.start :]), (only, cut)]:
                    if only is None:
                        chosen, a = slice(None), cut
                    rows_of = (
                        (list(chosen) if isinstance(chosen, tuple) else chosen,) if heads else ()
                    )
                    if flat:
                        o, n = offsets[i], lengths[i]
                        masks[(*rows_of, slice(o, o + n), slice(0, r.start))] = a[:, : r.start]
                        own_block = slice(prefix_len + o, prefix_len + o + n)
                        masks[(*rows_of, slice(o, o + n), own_block)] = a[:, r.start :]
                    else:
                        masks[(i, *rows_of)] = a
                    if only is None:
                        break
            # Flat: a leading batch dim, so the additive mask is 4D as in the batched path; with a
            # 3D one SDPA on CPU rounds otherwise (2e-5 in p on the trained toy, one row alone).
            mask = masks[..., :tokens, : prefix_len + tokens][None] if flat else masks[:joined]
            prefix = PrefixCache(
                capture.keys[index][..., :prefix_len, :], capture.values[index][..., :prefix_len, :]
            )
            hooks = []
            for site in ("attention", "mlp"):
                if (site, index) in edits:
                    module = loaded.site(loaded.model, index, site)
                    hooks.append(module.register_forward_hook(edit_output(edits[site, index])))
            try:
                out = self._call_layer(
                    layers,
                    eager,
                    index,
                    hidden,
                    attention_mask=additive_mask(mask, loaded.dtype),
                    use_cache=False,
                    **{self._cache_kwarg: prefix},
                    **(first_tokens(kwargs, tokens) if flat else kwargs),
                )
            finally:
                for hook in hooks:
                    hook.remove()
            hidden = out[0] if isinstance(out, tuple) else out
            if ("residual", index) in edits:
                # A row joining at the next layer takes this edit as it joins.
                apply_edits(hidden, [e for e in edits["residual", index] if e[0] < joined])
            self.work["token_layers"] += tokens if flat else joined * lengths[0]
            self.work["query_keys"] += mask.numel() // max(heads, 1)
            if capture.deltas[index] is not None:
                delta = capture.deltas[index]
                if flat:
                    delta = torch.cat([delta[:, r.start :] for r in rows[:joined]], dim=1)
                hidden = hidden + (delta if flat else delta[:, prefix_len:])
        join(loaded.num_layers)  # rows that cut what another cuts on every layer
        if flat:
            last = hidden[0, [o + n - 1 for o, n in zip(offsets, lengths, strict=True)]]
        else:
            last = hidden[:, -1]
        if order != sorted(order):
            last = last[[place[i] for i in range(len(order))]]
        if checked_here:
            edges.check()
        return loaded.lm_head()(loaded.final_norm()(last)).float().softmax(-1)

    # -- compiled layers ----------------------------------------------------------------------

    def _plain_layers(self, originals: list[Any]) -> list[Any]:
        """The decoder layers' plain twins (sharing the weights), made on first use."""
        if self._twins is None:
            self._twins = [plain_twin(layer) for layer in originals]
        return self._twins

    def _compiled_layers(self, twins: list[Any]) -> list[Any]:
        """The twins under torch.compile, made on first use."""
        if self._compiled is None:
            self._compiled = compiled_twins(twins)
        return self._compiled

    def _call_layer(
        self, layers: list[Any], eager: list[Any], index: int, *args: Any, **kwargs: Any
    ) -> Any:
        # Eager: patched rows, compile off, or a compile failure earlier in this recompute.
        if layers is eager or not self.compile:
            return eager[index](*args, **kwargs)
        try:
            out = layers[index](*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - any compiler failure: run uncompiled
            self.compile = False
            warnings.warn(
                FastEngineFallback(
                    f"fast engine on {self.loaded.model_id}: torch.compile failed on decoder "
                    f"layer {index} ({type(error).__name__}: {str(error)[:200]}); the recompute "
                    f"runs uncompiled from here on ({COMPILE_ENV}=0 skips compiling)"
                ),
                stacklevel=2,
            )
            return eager[index](*args, **kwargs)
        self.compiled_calls += 1
        return out

    # -- self-check -------------------------------------------------------------------------

    def _tolerance(self) -> float:
        return SELF_CHECK_TOLERANCE.get(self.loaded.dtype, HALF_PRECISION_TOLERANCE)

    def _check_noop(self, capture: CleanCapture) -> None:
        """Once per model: a condition that cuts nothing must give back the clean pass."""
        if ("noop",) in self._verified:
            return
        noop = Row(0, KnockoutCondition({}), capture.seq_len - 1, 0)
        gap = float((self._recompute(capture, [noop], True)[0] - capture.probs).abs().max())
        if gap > self._tolerance():
            self._broken = (
                f"a knockout that cuts nothing differs from the clean pass by {gap:.2e} "
                f"(max |Δp|, tolerance {self._tolerance():.0e})"
            )
        else:
            self._verified.add(("noop",))

    def _check_kinds(
        self,
        inputs: dict[str, torch.Tensor],
        rows: Sequence[Row],
        paths: dict[int, tuple[bool, bool]],
        out: list[torch.Tensor | None],
        capture: CleanCapture,
    ) -> str:
        """Re-run on the reference path one row of every kind not yet confirmed; the reason
        for falling back, or "" when the shortcut's answers hold."""
        causal = all(mask is None for mask in capture.own_masks)
        probes: list[tuple[Row, set[tuple]]] = []
        pending: set[tuple] = set()
        for row in rows:
            flat, forked = paths[row.index]
            kinds = shortcut_kinds(row, flat, capture.seq_len, causal, forked)
            if not kinds <= self._verified | pending:
                probes.append((row, kinds))
                pending |= kinds
        tolerance = self._tolerance()
        for i in range(0, len(probes), self.batch_size):
            chunk = probes[i : i + self.batch_size]
            want, _ = self._rows(inputs, [row.condition for row, _ in chunk])
            self.checked_rows += len(chunk)
            for (row, kinds), expected in zip(chunk, want, strict=True):
                gap = float((out[row.index] - expected).abs().max())  # type: ignore[operator]
                if gap > tolerance:
                    return (
                        f"the shortcut ({describe_kinds(kinds)}) differs from a full forward by "
                        f"{gap:.2e} (max |Δp|, tolerance {tolerance:.0e})"
                    )
                self._verified.update(kinds)
        return ""

    def _fall_back(
        self,
        inputs: dict[str, torch.Tensor],
        conditions: Sequence[KnockoutCondition],
        reason: str,
    ) -> torch.Tensor:
        self.fallback_reason = reason
        warnings.warn(
            FastEngineFallback(
                f"fast engine on {self.loaded.model_id}: {reason}; this model breaks an "
                "assumption of the shortcut, so this and later samples run on the reference "
                "path (the store's per-sample `engine` says which ran)"
            ),
            stacklevel=4,  # the caller of knockout (under its no_grad wrapper)
        )
        return super().knockout(inputs, conditions)


class PendingKnockout(Launched):
    """A fast-path knockout call queued on the device: `result()` waits for it, refuses a
    starved query, confirms each new kind of shortcut against a full forward, and falls back
    to the reference path where one differs."""

    def __init__(
        self,
        engine: FastEngine,
        inputs: dict[str, torch.Tensor],
        conditions: Sequence[KnockoutCondition],
        capture: CleanCapture,  # held: the queued recompute reads it until `done`
        rows: list[Row],
        paths: dict[int, tuple[bool, bool]],
        out: list[torch.Tensor | None],
        stacked: torch.Tensor,
        allowed: AllowedEdges,
        done: torch.cuda.Event | None,
    ) -> None:
        super().__init__(None)
        self.engine, self.inputs, self.conditions = engine, inputs, conditions
        self.capture, self.rows, self.paths, self.out = capture, rows, paths, out
        self.stacked, self.allowed, self.done = stacked, allowed, done

    @torch.no_grad()
    def _finish(self) -> torch.Tensor:
        engine = self.engine
        if self.done is not None:
            self.done.synchronize()
            # Made on the knockout stream, read on the caller's: its memory must not go back to
            # the knockout stream's pool while the caller's reads are still queued.
            self.stacked.record_stream(torch.cuda.current_stream(self.stacked.device))
        self.allowed.check()
        if engine._broken:  # an earlier sample's check failed after this one was queued
            return self._fallback(engine._broken)
        failure = engine._check_kinds(self.inputs, self.rows, self.paths, self.out, self.capture)
        if failure:
            engine._broken = failure
            return self._fallback(failure)
        self.used = {"fast"}
        engine.used.add("fast")
        return self.stacked

    def _fallback(self, reason: str) -> torch.Tensor:
        self.used, self.note = {"reference"}, reason
        return self.engine._fall_back(self.inputs, self.conditions, reason)


def _same_inputs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k] is b[k] for k in a)
