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

import torch

from flowtrace.engine.capture import CleanCapture, capture_clean, same_inputs
from flowtrace.engine.compiled import COMPILED_PATHS, RecomputeLayers, compile_default
from flowtrace.engine.condition import KnockoutCondition
from flowtrace.engine.masks import AllowedEdges, additive_mask
from flowtrace.engine.pending import PendingKnockout
from flowtrace.engine.reference import Launched, ReferenceEngine
from flowtrace.engine.row_masks import RowMasks
from flowtrace.engine.self_check import (
    HALF_PRECISION_TOLERANCE,
    SELF_CHECK_TOLERANCE,
    FastEngineFallback,
    describe_kinds,
    shortcut_kinds,
)
from flowtrace.engine.suffix import (
    PrefixCache,
    Row,
    apply_edits,
    first_blocked_query,
    first_tokens,
    forks,
    join_order,
    place_edit,
    placed_edits,
    plan_chunks,
    side_by_side_kwargs,
    site_edits,
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
        compile = compile_default(loaded) if compile is None else compile
        self.recompute_layers = RecomputeLayers(loaded, compile)
        self.compiled_paths = COMPILED_PATHS  # which recompute paths call compiled layers
        # Knockouts run on a stream of their own on CUDA, so the next sample's clean pass (on
        # the default stream, with the model's own host syncs) runs beside them (`launch`).
        self._stream = torch.cuda.Stream(loaded.device) if loaded.device.type == "cuda" else None
        self._capture: CleanCapture | None = None
        self.flat_tokens: int | None = None  # side-by-side limit; None: decided per group
        self._broken = ""  # why the shortcut is off for this model ("" while it holds)
        self.fallback_reason = ""  # why this sample's knockouts fell back ("" when none did)
        self.checked_rows = 0  # rows the self-check has re-run on the reference path, in all
        # Recomputed (token, layer) pairs and (query, key) pairs since the last clean pass:
        # the benchmark turns them into FLOPs.
        self.work = {"token_layers": 0, "query_keys": 0}

    @property
    def compile(self) -> bool:
        """Whether the recompute calls compiled layers (off for good after a compiler failure)."""
        return self.recompute_layers.compile

    @property
    def compiled_calls(self) -> int:
        """Layer calls that ran compiled, since the engine was made."""
        return self.recompute_layers.compiled_calls

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
        if self._capture is not None and same_inputs(self._capture.source, inputs):
            return self._capture
        self._capture = None  # free the last sample's capture before making this one
        self._capture = capture_clean(self.loaded, inputs, self._cache_kwarg)
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
        fixed = self.flat_tokens is not None
        chunks = plan_chunks(rows, seq_len, flat_limit, fixed, self.token_budget)
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
        # The rows go in the order they join, and their answers back in the caller's order at
        # the end; some begin as a copy of an earlier row's stream, further on (suffix.forks).
        copies = forks(rows, loaded.num_layers)
        order, joins, parent = join_order(rows, copies)
        rows = [rows[i] for i in order]
        if forked is not None:
            forked.update(rows[i].index for i in parent)
        prefix_len = max(r.start for r in rows)
        lengths = [seq_len - r.start for r in rows]
        offsets = [sum(lengths[:i]) for i in range(len(rows))]
        # (own mask, blocked) -> allowed edges; sweeps share both across rows and layers.
        checked_here = allowed is None
        edges = AllowedEdges(seq_len, device) if allowed is None else allowed
        # Head-level conditions need a mask per head: (heads, Q, K) flat, (R, heads, S, T) batched.
        heads = loaded.num_heads if any(r.condition.heads is not None for r in rows) else 0
        masks = RowMasks(rows, flat, heads, prefix_len, lengths, offsets, seq_len, edges)
        if flat:
            kwargs = side_by_side_kwargs(capture.layer_kwargs, [r.start for r in rows])
        else:
            kwargs = suffix_kwargs(capture.layer_kwargs, prefix_len)
        edits = placed_edits(rows, offsets, flat, device, loaded.dtype)
        # Attention and MLP edits go in through hooks on the model's own modules; the rest call
        # the twins, compiled on the paths where compiling pays (engine/compiled.py).
        hooked = any(site != "residual" for site, _ in edits)
        path = "flat" if flat else "batched"
        layers, eager = self.recompute_layers.pick(hooked, path in self.compiled_paths)
        width = capture.inputs[0].shape[-1]
        hidden = capture.inputs[0].new_empty((1, 0, width) if flat else (0, lengths[0], width))
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
                joined += 1
                tokens += fresh.shape[1]

        for index in range(joins[0], loaded.num_layers):
            join(index)
            mask = masks.layer(index, capture.own_masks[index], joined, tokens)
            prefix = PrefixCache(
                capture.keys[index][..., :prefix_len, :], capture.values[index][..., :prefix_len, :]
            )
            with site_edits(loaded, edits, index):
                out = self.recompute_layers.call(
                    layers,
                    eager,
                    index,
                    hidden,
                    attention_mask=additive_mask(mask, loaded.dtype),
                    use_cache=False,
                    **{self._cache_kwarg: prefix},
                    **(first_tokens(kwargs, tokens) if flat else kwargs),
                )
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
            place = {old: new for new, old in enumerate(order)}
            last = last[[place[i] for i in range(len(order))]]
        if checked_here:
            edges.check()
        return loaded.lm_head()(loaded.final_norm()(last)).float().softmax(-1)

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
