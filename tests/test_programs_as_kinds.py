"""The built-in knockout kinds written out as trace programs (recipes/programs/): each store
equals the declared recipe's (fp32 CPU, 1e-6), and a program that `yield`s its conditions joins
the pass's one engine call per sample. Also what yield and a sparse grid mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flowtrace.data import SampleError, read_samples, sample_frames
from flowtrace.engine import FastEngine
from flowtrace.interventions import Cut
from flowtrace.kinds.common import Plan, Step
from flowtrace.kinds.program import ProgramMeasure
from flowtrace.models import load_model
from flowtrace.pipeline.options import resolve_data
from flowtrace.program import Trace
from flowtrace.recipe import TraceProgram, load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube

pytestmark = pytest.mark.slow
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TOLERANCE = 1e-6
ANSWERS = ("prob_pred", "prob_true", "rel_change_pred", "rel_change_true", "new_pred", "correct")


def stored(recipe: Path, out: Path, limit: int):
    run(load_recipe(recipe), RunOptions(out=out, limit=limit, sample_mode="all", plot=False))
    return open_cube(out)


def assert_same_store(declared, program) -> None:
    for coord in ("sample", "layer", "source", "target", "status"):
        assert declared[coord].values.tolist() == program[coord].values.tolist(), coord
    assert (declared["status"] == "ok").all()
    for name in (*ANSWERS, "blocked_edges", "clean_prob_pred"):
        want, got = declared[name].values, program[name].values
        assert want.shape == got.shape, name
        if want.dtype.kind == "f":
            assert np.array_equal(np.isnan(want), np.isnan(got)), name
            finite = ~np.isnan(want)
            assert finite.any(), name
            np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=TOLERANCE)
        else:
            assert want.tolist() == got.tolist(), name


@pytest.mark.parametrize(
    ("declared", "program", "limit"),
    [
        ("cross_frame", "cross_frame", 3),
        ("vql_to_ql", "knockout", 3),
        ("flow_map", "flow_map", 1),
    ],
)
def test_a_knockout_kind_written_as_a_program_writes_the_same_store(
    tmp_path: Path, declared: str, program: str, limit: int
):
    want = stored(RECIPES / f"{declared}.py", tmp_path / "declared.zarr", limit)
    got = stored(RECIPES / "programs" / f"{program}.py", tmp_path / "program.zarr", limit)
    assert_same_store(want, got)
    # The cut moved something: the comparison is not of two clean runs.
    changed = np.abs(want["rel_change_pred"].values)
    assert np.nanmax(changed) > 1.0


def test_a_yielding_program_joins_the_passs_one_engine_call(tmp_path: Path, monkeypatch):
    calls: list[int] = []
    launch = FastEngine.launch

    def counted(self, inputs, conditions):
        calls.append(len(conditions))
        return launch(self, inputs, conditions)

    monkeypatch.setattr(FastEngine, "launch", counted)
    recipes = [
        load_recipe(RECIPES / "cross_frame.py"),
        load_recipe(RECIPES / "programs/knockout.py"),
    ]
    run(recipes, RunOptions(out=tmp_path, limit=2, sample_mode="all", plot=False))
    layers = open_cube(tmp_path / "cross_frame.zarr").sizes["layer"]
    # One call per sample holding both recipes' rows: cross_frame's and vql_to_ql's four edges.
    assert calls == [layers + 4 * layers] * 2, calls
    alone = stored(RECIPES / "vql_to_ql.py", tmp_path / "alone.zarr", 2)
    assert_same_store(alone, open_cube(tmp_path / "vql_to_ql.zarr"))


# -- yield and sparse grids on one trace ------------------------------------------------------


@pytest.fixture(scope="module")
def t():
    loaded = load_model("toy", device="cpu", dtype="float32")
    data = read_samples(resolve_data("toy"))
    sample = next(s for s in data if s.task == "Moving Direction")
    prepared = loaded.adapter.prepare(loaded, sample, sample_frames(sample, 8))
    engine = FastEngine(loaded)
    probs = engine.clean(prepared.inputs)
    answer = int(probs.argmax())
    return Trace(sample, prepared.inputs, prepared.layout, loaded, answer, 0, probs, 8, 0, engine)


def test_a_sparse_grids_empty_cells_run_nothing_and_read_missing(t: Trace):
    def make(layer, edge):
        return None if (layer + edge) % 2 else Cut(["video -> last", "query -> last"][edge], layer)

    laid = t.grid(make, layer=range(4), edge=[0, 1])
    assert len(t.conditions(laid)) == 4
    out = t.run(laid)
    dense = t.run(
        t.grid(lambda layer, edge: Cut(["video -> last", "query -> last"][edge], layer),
               layer=range(4), edge=[0, 1])
    )  # fmt: skip
    p, want = out.p(t.answer_id).values, dense.p(t.answer_id).values
    empty = np.array([[(layer + edge) % 2 == 1 for edge in (0, 1)] for layer in range(4)])
    assert np.isnan(p[empty]).all() and not np.isnan(p[~empty]).any()
    np.testing.assert_allclose(p[~empty], want[~empty], atol=1e-6)
    assert (out.top().values[empty] == -1).all() and not out.flips(t.answer_id).values[empty].any()
    changes = t.answer_changes(out)
    assert (changes["new_pred"].values[empty] == "").all()
    assert np.isnan(changes["rel_change_pred"].values[empty]).all()
    # The relative change, recomputed here from the dense run's p.
    clean = float(t.clean_probs[t.answer_id])
    # The dense run's p agree to 1e-6, so its relative changes to 100 * 1e-6 / p.
    np.testing.assert_allclose(
        changes["rel_change_pred"].values[~empty],
        100 * (want[~empty] - clean) / clean,
        rtol=0,
        atol=100 * 2e-6 / clean,
    )


def test_a_program_may_yield_again_and_must_yield_conditions(t: Trace):
    def twice(t: Trace):
        first = yield Cut("video -> last", 2)
        second = yield [Cut("query -> last", 3)]
        return {"p": first.p(t.answer_id) + second.p(t.answer_id).values}

    measure = ProgramMeasure(TraceProgram("twice", "twice", twice), t.loaded, 8, [t.sample], 0)
    got = float(measure.run_on(t)["p"].values[0])
    want = float(t.run(Cut("video -> last", 2)).p(t.answer_id)[0]) + float(
        t.run(Cut("query -> last", 3)).p(t.answer_id)[0]
    )
    assert abs(got - want) < 1e-6

    def nothing(t: Trace):
        yield
        return {}

    bad = ProgramMeasure(TraceProgram("nothing", "nothing", nothing), t.loaded, 8, [t.sample], 0)
    with pytest.raises(SampleError, match=r"yielded None; yield the conditions"):
        bad.run_on(t)


def test_a_program_that_raises_after_its_yield_fails_its_sample_only(t: Trace):
    def late(t: Trace):
        out = yield Cut("video -> last", 1)
        return {"p": out.p(t.answer_id) * (1 / 0)}

    measure = ProgramMeasure(TraceProgram("late", "late", late), t.loaded, 8, [t.sample], 0)

    class Prepared:
        inputs, layout = t.inputs, t.layout

    plan = measure.plan(Prepared(), t.sample, t.clean, t.engine)
    assert isinstance(plan, Plan) and len(plan.knockouts) == 1 and not plan.fill_runs_model
    rows = t.engine.launch(t.inputs, plan.knockouts).result()
    step = Step(t.sample, t.engine, Prepared(), t.clean, measure.schema.empty("s"), plan, rows)
    with pytest.raises(SampleError, match=r"ZeroDivisionError"):
        measure.fill(step)
    assert torch.isfinite(rows).all()


def test_a_generator_program_is_seen_through_partial_and_callable_objects(t: Trace):
    import functools

    from flowtrace.kinds.program import yields

    def sweep(t: Trace, layer: int):
        out = yield Cut("video -> last", layer)
        return {"p": out.p(t.answer_id)}

    class Sweep:
        def __call__(self, t: Trace):
            return (yield from sweep(t, 2))

    assert yields(sweep) and yields(functools.partial(sweep, layer=2)) and yields(Sweep())
    assert not yields(lambda t: {"p": 1.0})
    want = float(t.run(Cut("video -> last", 2)).p(t.answer_id)[0])
    for program in (functools.partial(sweep, layer=2), Sweep()):
        measure = ProgramMeasure(TraceProgram("s", "s", program), t.loaded, 8, [t.sample], 0)
        assert abs(float(measure.run_on(t)["p"].values[0]) - want) < 1e-6
