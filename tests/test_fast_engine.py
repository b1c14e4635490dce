"""The fast engine gives the reference engine's numbers and falls back, loudly, when it can't.

Numbers are checked on the trained toy where the knockouts move the answer far more than the
tolerance; every test says which path ran (`engine.used`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from plain_reference import plain_knockout_probs, plain_per_layer_probs

from flowtrace.data import read_frames, read_samples
from flowtrace.engine import FastEngine, KnockoutCondition, ReferenceEngine
from flowtrace.engine.compiled import COMPILED_PATHS, SHARED_TWINS
from flowtrace.engine.fast import FastEngineFallback
from flowtrace.engine.self_check import SELF_CHECK_TOLERANCE, shortcut_kinds
from flowtrace.engine.suffix import Row, first_blocked_query
from flowtrace.models import load_model
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy import EMBEDDED_DATA

KNOCKOUT_RECIPES = ("cross_frame", "vql_to_ql", "question_options_to_last", "vq_to_true_option")
STYLES = ("center", "inverse", "top_down", "bottom_up")


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32", attn="sdpa")


@pytest.fixture(scope="module")
def prepared(loaded, tiny_data: Path):
    sample = read_samples(tiny_data, tasks=["Event Order"])[0]
    return loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))


@pytest.fixture(scope="module")
def toy():
    """The trained toy: knockouts move its answer by up to 1, not by 1e-6 as on random weights."""
    return load_model("toy", device="cpu", dtype="float32", attn="sdpa")


def toy_sample(toy, task: str = "Event Order", index: int = 0):
    sample = read_samples(EMBEDDED_DATA, tasks=[task])[index]
    return toy.adapter.prepare(toy, sample, read_frames(sample.video, 8))


@pytest.fixture(scope="module")
def toy_prepared(toy):
    return toy_sample(toy)


TOLERANCE = 1e-5  # fast (or reference) against plain PyTorch, float32


@pytest.mark.parametrize("rows", ["auto", "batched", "side_by_side"])
@pytest.mark.parametrize("style", STYLES)
def test_every_knockout_recipe_matches_reference(style: str, rows: str, loaded, prepared):
    reference, fast = ReferenceEngine(loaded, batch_size=16), FastEngine(loaded, token_budget=400)
    fast.flat_tokens = {"auto": None, "batched": 0, "side_by_side": 10**9}[rows]
    fast.clean(prepared.inputs)
    clean = reference.clean(prepared.inputs)
    for name in KNOCKOUT_RECIPES:
        conditions = load_recipe(name).conditions(
            prepared.layout, loaded.num_layers, Sweep(3, style)
        )
        knockouts = [c.knockout for c in conditions]
        want = reference.knockout(prepared.inputs, knockouts)
        got = fast.knockout(prepared.inputs, knockouts)
        gap = (got - want).abs().max()
        assert gap <= 1e-5, f"{name} {style}: max |Δp| {gap:.2e}"
        assert (want - clean).abs().max() > 1e-4, f"{name} {style} should move the answer"
    assert fast.used == {"fast"}


def test_per_layer_edges_and_mixed_starts_match_plain_pytorch(toy, toy_prepared):
    """Pathway plans cut other edges in each layer; rows of one call start at other positions."""
    loaded, prepared = toy, toy_prepared
    layout = prepared.layout
    seq_len = layout.seq_len
    video, question, last = layout["video"], layout["question"], layout["last"]
    frames = [layout[f"frame_{t}"] for t in range(layout.num_frames)]

    def matrix(pairs):
        m = torch.zeros(seq_len, seq_len, dtype=torch.bool)
        for queries, keys in pairs:
            m[np.ix_(queries, keys)] = True
        return m

    cross = [(frames[t], np.concatenate(frames[:t])) for t in range(1, len(frames))]
    options = layout["options"]
    plans = [  # other edges per layer, gaps, starts at a frame, the question and the last token
        {0: cross, 1: cross + [(question, video)], 2: [(question, video)], 3: [(last, question)]},
        {2: [(last, video)], 3: [(last, video), (last, question)], 4: [(last, video)]},
        {1: [(question, video)], 2: cross + [(last, video)], 3: [(last, video)]},
        {3: [(question, video)], 4: [(last, video)], 6: [(last, options)]},
        {3: [(last, last[:0])]},  # lists layer 3 but cuts nothing: the clean answer
    ]
    conditions = [KnockoutCondition({k: matrix(v) for k, v in p.items()}) for p in plans]
    wants = [plain_per_layer_probs(loaded.model, prepared.inputs, plan) for plan in plans]
    clean = plain_per_layer_probs(loaded.model, prepared.inputs, {})
    for want in wants[:-1]:  # each plan moves the answer by far more than the tolerance
        assert (want - clean).abs().max() > 100 * TOLERANCE
    for flat_tokens in (0, 10**9):
        fast = FastEngine(loaded, token_budget=40)  # forces several chunks
        fast.flat_tokens = flat_tokens
        fast.clean(prepared.inputs)
        got = fast.knockout(prepared.inputs, conditions)
        assert fast.used == {"fast"} and fast.fallback_reason == ""
        for row, want in zip(got, wants, strict=True):
            assert torch.allclose(row, want, atol=TOLERANCE, rtol=0), (row - want).abs().max()
        assert torch.allclose(got[-1], clean, atol=TOLERANCE, rtol=0)


def _window_plans(layout) -> tuple[list[dict], list[KnockoutCondition], int]:
    """Cross-frame cuts over the toy's first layers, as a sweep's first windows make them (one
    matrix shared by every layer and row): 0-1, 0-2, 0-3, 0-1 again, and 0-1 with another cut
    on layer 0. Returns the plans as (queries, keys) pairs, as conditions, and the first cut
    query."""
    frames = [layout[f"frame_{t}"] for t in range(layout.num_frames)]
    cross = [(frames[t], np.concatenate(frames[:t])) for t in range(1, len(frames))]
    first_pair = [(frames[1], frames[0])]
    plans = [
        {0: cross, 1: cross},
        {0: cross, 1: cross, 2: cross},  # as the first up to layer 2: a copy of it there
        {0: cross, 1: cross, 2: cross, 3: cross},  # as the second up to layer 3
        {0: cross, 1: cross},  # the first again: a copy of its output
        {0: first_pair, 1: cross},  # another cut on layer 0: its own stream from the start
    ]
    matrices = {}
    for pairs in (cross, first_pair):
        m = torch.zeros(layout.seq_len, layout.seq_len, dtype=torch.bool)
        for queries, keys in pairs:
            m[np.ix_(queries, keys)] = True
        matrices[id(pairs)] = m
    conditions = [KnockoutCondition({k: matrices[id(v)] for k, v in p.items()}) for p in plans]
    return plans, conditions, int(frames[1][0])


@pytest.mark.parametrize("flat_tokens", [0, 10**9], ids=["batched", "side_by_side"])
def test_rows_cutting_the_same_first_layers_compute_them_once(flat_tokens, toy, toy_prepared):
    """Rows of one call that cut the same edges up to some layer share the stream up to there:
    the later one joins as a copy. Numbers against plain PyTorch, the work against a hand
    count."""
    prepared = toy_prepared
    plans, conditions, start = _window_plans(prepared.layout)
    wants = [plain_per_layer_probs(toy.model, prepared.inputs, plan) for plan in plans]
    clean = plain_per_layer_probs(toy.model, prepared.inputs, {})
    # A copy taken one layer too late or too early would show: the plans differ by more.
    assert (wants[1] - wants[0]).abs().max() > 10 * TOLERANCE
    assert (wants[2] - wants[1]).abs().max() > 10 * TOLERANCE
    assert (wants[4] - wants[0]).abs().max() > 10 * TOLERANCE
    assert (wants[0] - clean).abs().max() > 100 * TOLERANCE
    fast = FastEngine(toy)
    fast.flat_tokens = flat_tokens
    fast.clean(prepared.inputs)
    fast.knockout(prepared.inputs, conditions)  # the self-check's once-per-model no-op row
    fast.clean(prepared.inputs)  # the same inputs: the capture is kept, the work counted anew
    launched = fast.launch(prepared.inputs, conditions)
    got = launched.result()
    copies = {index for index, (_, forked) in launched.paths.items() if forked}
    assert fast.used == {"fast"} and copies == {1, 2, 3}
    for row, want in zip(got, wants, strict=True):
        assert torch.allclose(row, want, atol=TOLERANCE, rtol=0), (row - want).abs().max()
    # Layers recomputed per row: all 8, from 2, from 3, none, all 8.
    suffix = prepared.layout.seq_len - start
    assert fast.work["token_layers"] == suffix * (8 + 6 + 5 + 0 + 8)


@pytest.mark.parametrize("flat_tokens", [0, 10**9], ids=["batched", "side_by_side"])
def test_a_wrong_copy_is_caught_by_the_self_check(flat_tokens, toy, toy_prepared, monkeypatch):
    """A row begun as a copy is a kind of its own: a copy taken one layer late (where the rows
    cut differently) falls back, though every other feature of that row was confirmed."""
    import flowtrace.engine.fast as fast_module

    prepared = toy_prepared
    _, conditions, _ = _window_plans(prepared.layout)
    want = ReferenceEngine(toy).knockout(prepared.inputs, conditions)
    real = fast_module.forks

    def late(rows, num_layers):
        return {
            i: (j, min(layer + 1, num_layers)) for i, (j, layer) in real(rows, num_layers).items()
        }

    monkeypatch.setattr(fast_module, "forks", late)
    unchecked = FastEngine(toy)
    unchecked.flat_tokens = flat_tokens
    unchecked._check_kinds = lambda *args: ""
    unchecked.clean(prepared.inputs)
    wrong = unchecked.knockout(prepared.inputs, conditions)
    assert (wrong - want).abs().max() > 10 * SELF_CHECK_TOLERANCE[torch.float32]

    fast = FastEngine(toy)
    fast.flat_tokens = flat_tokens
    fast.clean(prepared.inputs)
    with pytest.warns(FastEngineFallback, match="begun as a copy"):
        got = fast.knockout(prepared.inputs, conditions)
    assert fast.used == {"reference"}
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_falls_back_to_reference_when_the_model_breaks_causality(tiny_model_dir, tiny_data):
    """A hook that mixes positions (no causal LM does) makes the shortcut wrong: it must notice."""
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", attn="sdpa")
    sample = read_samples(tiny_data, tasks=["Moving Direction"])[0]
    prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))

    def mix(module, args, output):
        return output + 0.5 * output.mean(dim=1, keepdim=True)

    layer = loaded.model.model.language_model.layers[1]
    handle = layer.register_forward_hook(mix)
    try:
        knockouts = [
            c.knockout
            for c in load_recipe("vql_to_ql").conditions(
                prepared.layout, loaded.num_layers, Sweep(window=1)
            )
        ]
        fast = FastEngine(loaded)
        fast.clean(prepared.inputs)
        with pytest.warns(FastEngineFallback, match="reference path"):
            got = fast.knockout(prepared.inputs, knockouts)
        want = ReferenceEngine(loaded).knockout(prepared.inputs, knockouts)
    finally:
        handle.remove()
    assert fast.used == {"reference"}
    assert "differs" in fast.fallback_reason
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_runner_engines_write_the_same_cube(tiny_model_dir: Path, tiny_data: Path, tmp_path):
    common = dict(model=str(tiny_model_dir), data=str(tiny_data), limit=3, sweep=Sweep(window=3))
    common |= dict(sample_mode="all", device="cpu", plot=False)
    recipe = load_recipe("vql_to_ql")
    fast = run(recipe, RunOptions(out=tmp_path / "fast.zarr", **common))
    reference = run(recipe, RunOptions(out=tmp_path / "ref.zarr", engine="reference", **common))
    a, b = open_cube(fast.store), open_cube(reference.store)
    assert a.attrs["engine"] == "fast" and b.attrs["engine"] == "reference"
    assert set(a["engine"].values) == {"fast"} and set(b["engine"].values) == {"reference"}
    np.testing.assert_allclose(a["prob_true"].values, b["prob_true"].values, atol=1e-5)
    np.testing.assert_array_equal(a["new_pred"].values, b["new_pred"].values)


@pytest.mark.parametrize("flat_tokens", [0, 10**9])
def test_head_level_knockouts_match_plain_pytorch(flat_tokens, toy, toy_prepared):
    """Cut in some heads only: both engines against a per-head mask built by hand."""
    loaded, prepared = toy, toy_prepared
    layout = prepared.layout
    cases = [  # (target, source, layers, heads)
        ("last", "video", [1, 2, 3], (0,)),
        ("frame_3", "frame_1", [0], (1, 3)),
        ("last", "video", [2, 3, 4], (0, 3)),
        ("last", "video", [1, 2, 3], (3,)),
        ("last", "video", [1, 2, 3], None),
    ]
    conditions = []
    for target, source, layers, heads in cases:
        blocked = torch.zeros(layout.seq_len, layout.seq_len, dtype=torch.bool)
        blocked[np.ix_(layout[target], layout[source])] = True
        conditions.append(KnockoutCondition.window(blocked, layers, heads))
    fast = FastEngine(loaded)
    fast.flat_tokens = flat_tokens
    clean = fast.clean(prepared.inputs)
    got = fast.knockout(prepared.inputs, conditions)
    assert fast.used == {"fast"}
    reference = ReferenceEngine(loaded).knockout(prepared.inputs, conditions)
    for row, ref_row, (target, source, layers, heads) in zip(got, reference, cases, strict=True):
        pairs = [(layout[target].tolist(), layout[source].tolist())]
        want = plain_knockout_probs(loaded.model, prepared.inputs, pairs, layers, heads)
        assert torch.allclose(row, want, atol=TOLERANCE, rtol=0)
        assert torch.allclose(ref_row, want, atol=TOLERANCE, rtol=0)
    moved = (got - clean).abs().amax(-1)
    assert (moved > 10 * TOLERANCE).all(), moved  # every case moves the answer past the tolerance
    assert (got[0] - got[4]).abs().max() > 100 * TOLERANCE, "one head is not all heads"


def _off_by_one_flat(monkeypatch):
    """Plant the bug the old once-per-model check missed: the side-by-side path reuses the clean
    pass for one position too many (the first cut query keeps its clean state)."""
    real = FastEngine._recompute

    def recompute(self, capture, rows, flat, allowed=None, forked=None):
        if flat:
            rows = [
                Row(r.index, r.condition, r.start + 1, r.entry)
                if r.start < capture.seq_len - 1
                else r
                for r in rows
            ]
        return real(self, capture, rows, flat, allowed, forked)

    monkeypatch.setattr(FastEngine, "_recompute", recompute)


def test_a_wrong_shortcut_of_one_kind_falls_back_loudly(toy, monkeypatch):
    prepared = toy_sample(toy, "Object Count")
    recipe = load_recipe("vql_to_ql")
    sweep = Sweep(window=3, layers=(0, 4))  # first cut layers 0..2: enough kinds, half the passes
    conditions = recipe.conditions(prepared.layout, toy.num_layers, sweep)
    knockouts = [c.knockout for c in conditions]
    want = ReferenceEngine(toy).knockout(prepared.inputs, knockouts)
    _off_by_one_flat(monkeypatch)

    # The bug moves numbers well past the self-check's bound, but not those the old check
    # probed: the first condition on the batched path, and a no-op condition (it starts at the
    # last token, which the bug leaves alone).
    bound = SELF_CHECK_TOLERANCE[torch.float32]
    unchecked = FastEngine(toy)
    unchecked._check_kinds = lambda *args: ""
    unchecked.clean(prepared.inputs)
    wrong = unchecked.knockout(prepared.inputs, knockouts)
    assert (wrong - want).abs().max() > 10 * bound
    first = Row(0, knockouts[0], first_blocked_query(knockouts[0]), knockouts[0].layers[0])
    with torch.no_grad():
        batched = unchecked._recompute(unchecked.capture(prepared.inputs), [first], False)
    assert (batched[0] - want[0]).abs().max() <= TOLERANCE

    fast = FastEngine(toy)
    fast.clean(prepared.inputs)
    with pytest.warns(FastEngineFallback, match="flat path") as caught:
        got = fast.knockout(prepared.inputs, knockouts)
    message = str(caught[0].message)
    assert "differs from a full forward" in message and "reference path" in message
    assert fast.used == {"reference"} and "flat path" in fast.fallback_reason
    assert torch.allclose(got, want, atol=1e-6, rtol=0)

    # The next sample starts clean, then falls back again for the same reason.
    other = toy_sample(toy, "Moving Direction")
    fast.clean(other.inputs)
    assert fast.used == set() and fast.fallback_reason == ""
    other_knockouts = recipe.conditions(other.layout, toy.num_layers, Sweep(3, layers=(0, 2)))
    with pytest.warns(FastEngineFallback):
        fast.knockout(other.inputs, [c.knockout for c in other_knockouts])
    assert fast.used == {"reference"} and "flat path" in fast.fallback_reason


def test_self_check_runs_once_per_kind(toy):
    """A sample whose kinds of shortcut were all confirmed re-runs nothing on the reference path;
    a condition of a new kind (an unseen first cut layer here) is checked once."""
    fast = FastEngine(toy)
    runs = []
    for index in (0, 1):
        prepared = toy_sample(toy, "Object Color", index)
        conditions = load_recipe("vql_to_ql").conditions(
            prepared.layout, toy.num_layers, Sweep(window=3)
        )
        knockouts = [c.knockout for c in conditions if c.layer < 4]  # first cut layers 0..2
        fast.clean(prepared.inputs)
        fast.knockout(prepared.inputs, knockouts)
        assert fast.used == {"fast"} and fast.fallback_reason == ""
        runs.append(fast.checked_rows)
    assert 0 < runs[0] <= len(knockouts) and runs[1] == runs[0]
    late = [c.knockout for c in conditions if c.layer == 6][:1]  # first cut layer 5
    fast.knockout(prepared.inputs, late)
    assert fast.checked_rows == runs[1] + 1


def test_engines_of_one_model_share_confirmed_kinds(toy, toy_prepared):
    """The next engine on a model (a process's next run) confirms no kind again and gives the
    same rows; an engine with other settings confirms its own."""
    conditions = load_recipe("vql_to_ql").conditions(
        toy_prepared.layout, toy.num_layers, Sweep(window=3)
    )
    knockouts = [c.knockout for c in conditions]
    rows, checked = [], []
    for engine in (FastEngine(toy), FastEngine(toy), FastEngine(toy, token_budget=1024)):
        engine.clean(toy_prepared.inputs)
        rows.append(engine.knockout(toy_prepared.inputs, knockouts))
        assert engine.used == {"fast"}
        checked.append(engine.checked_rows)
    assert checked[0] > 0 and checked[1] == 0 and checked[2] > 0, checked
    # The engine that confirmed nothing itself still gives the full forwards' numbers.
    want = ReferenceEngine(toy).knockout(toy_prepared.inputs, knockouts)
    assert (want - ReferenceEngine(toy).clean(toy_prepared.inputs)).abs().max() > 100 * TOLERANCE
    assert torch.allclose(rows[1], want, atol=TOLERANCE, rtol=0), (rows[1] - want).abs().max()


@pytest.mark.slow
def test_compiled_recompute_matches_plain_pytorch(toy, toy_prepared):
    """torch.compile'd layer twins (the GPU default) give the plain knockout's numbers, on the
    flat and the batched path, with and without head-level cuts; the compiled path really ran."""
    prepared = toy_prepared
    layout = prepared.layout
    frames = [layout[f"frame_{t}"] for t in range(layout.num_frames)]
    cross = [(frames[t], np.concatenate(frames[:t])) for t in range(1, len(frames))]
    cases = [
        (cross, [0, 1, 2], None),  # moves p by 2e-3
        ([(layout["last"], layout["question"])], [0, 1, 2], None),  # by 1.0
        ([(layout["last"], layout["video"])], [2, 3, 4], (0, 2)),  # by 0.5
    ]
    seq_len = layout.seq_len
    conditions, wants = [], []
    for pairs, layers, heads in cases:
        m = torch.zeros(seq_len, seq_len, dtype=torch.bool)
        for queries, keys in pairs:
            m[np.ix_(queries, keys)] = True
        conditions.append(KnockoutCondition.window(m, layers, heads))
        wants.append(plain_knockout_probs(toy.model, prepared.inputs, pairs, layers, heads))
    clean = plain_per_layer_probs(toy.model, prepared.inputs, {})
    for want in wants:
        assert (want - clean).abs().max() > 100 * TOLERANCE
    # All batched, all side by side (compiled only where asked: by default the batched path).
    for flat_tokens, paths, compiled in [
        (0, COMPILED_PATHS, True),
        (10**9, ("batched", "flat"), True),
        (10**9, COMPILED_PATHS, False),
    ]:
        fast = FastEngine(toy, compile=True)
        fast.flat_tokens, fast.compiled_paths = flat_tokens, paths
        fast.clean(prepared.inputs)
        got = fast.knockout(prepared.inputs, conditions)
        assert fast.compile and (fast.compiled_calls > 0) == compiled, fast.compiled_calls
        assert fast.used == {"fast"} and fast.fallback_reason == ""
        for row, want in zip(got, wants, strict=True):
            assert torch.allclose(row, want, atol=TOLERANCE, rtol=0), (row - want).abs().max()


def test_a_failing_compile_runs_uncompiled_with_a_warning(toy, toy_prepared, monkeypatch):
    """A compiler error on some model must not lose the sample: the layer reruns uncompiled."""

    def broken(module, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("backend exploded")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    # Compiled layers are kept per model for the process: compile afresh, through `broken`.
    monkeypatch.setitem(SHARED_TWINS, toy.model, {})
    prepared = toy_prepared
    last, question = prepared.layout["last"], prepared.layout["question"]
    m = torch.zeros(prepared.layout.seq_len, prepared.layout.seq_len, dtype=torch.bool)
    m[np.ix_(last, question)] = True
    want = plain_knockout_probs(toy.model, prepared.inputs, [(last, question)], [3, 4, 5])
    fast = FastEngine(toy, compile=True)
    fast.flat_tokens = 0  # the batched path: the one compiled by default
    fast.clean(prepared.inputs)
    with pytest.warns(FastEngineFallback, match="torch.compile failed.*backend exploded"):
        got = fast.knockout(prepared.inputs, [KnockoutCondition.window(m, [3, 4, 5])])
    assert not fast.compile and fast.compiled_calls == 0
    assert torch.allclose(got[0], want, atol=TOLERANCE, rtol=0)


def test_compile_defaults_to_cuda_only(toy, monkeypatch):
    monkeypatch.delenv("FLOWTRACE_COMPILE", raising=False)
    assert FastEngine(toy).compile is False  # a CPU model
    monkeypatch.setenv("FLOWTRACE_COMPILE", "1")
    assert FastEngine(toy).compile is True
    monkeypatch.setenv("FLOWTRACE_COMPILE", "off")
    assert FastEngine(toy, compile=None).compile is False


def test_a_start_inside_a_causal_model_is_confirmed_once_for_every_position(toy, toy_prepared):
    """On a causal model the first cut query's position is not part of the shortcut's kind: a
    cut starting at the options, after one confirmed at the question, re-runs nothing on the
    reference path (a sample whose option sits elsewhere costs no full forward), and both
    match plain PyTorch."""
    prepared = toy_prepared
    layout, seq_len = prepared.layout, prepared.layout.seq_len
    fast = FastEngine(toy)
    fast.clean(prepared.inputs)
    fast.knockout(prepared.inputs, [KnockoutCondition({})])  # the once-per-model no-op check
    checked, starts = [], []
    for queries in ("question", "options"):
        pairs = [(layout[queries], layout["video"])]
        m = torch.zeros(seq_len, seq_len, dtype=torch.bool)
        m[np.ix_(layout[queries], layout["video"])] = True
        condition = KnockoutCondition.window(m, [2, 3, 4])
        starts.append(first_blocked_query(condition))
        before = fast.checked_rows
        got = fast.knockout(prepared.inputs, [condition])
        checked.append(fast.checked_rows - before)
        want = plain_knockout_probs(toy.model, prepared.inputs, pairs, [2, 3, 4])
        assert fast.used == {"fast"}
        assert torch.allclose(got[0], want, atol=TOLERANCE, rtol=0)
    assert starts[0] < starts[1] < seq_len - 1
    assert checked == [1, 0], checked
    # Where a layer's own mask is not causal, each position is its own kind.
    row = Row(0, condition, starts[1], 2)
    assert ("start", "inside") in shortcut_kinds(row, True, seq_len, causal=True)
    assert ("start", starts[1]) in shortcut_kinds(row, True, seq_len, causal=False)


def test_a_starved_query_is_refused_on_the_fast_path(toy, toy_prepared):
    """A cut that leaves a query no key is refused as on the reference path, though the fast
    engine reads the check back only once per call, after queuing every recompute."""
    from flowtrace.errors import FlowtraceError

    layout = toy_prepared.layout
    query = int(layout["question"][0])
    starved = torch.zeros(layout.seq_len, layout.seq_len, dtype=torch.bool)
    starved[query, : query + 1] = True  # the query and everything before it
    fine = torch.zeros_like(starved)
    fine[np.ix_(layout["last"], layout["video"])] = True
    fast = FastEngine(toy)
    fast.clean(toy_prepared.inputs)
    conditions = [KnockoutCondition.window(m, [2]) for m in (fine, starved)]
    with pytest.raises(FlowtraceError, match=rf"query position\(s\) \[{query}\] with no key"):
        fast.knockout(toy_prepared.inputs, conditions)
    assert fast.knockout(toy_prepared.inputs, conditions[:1]).shape[0] == 1
