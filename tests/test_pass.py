"""Several recipes in one pass: each video decoded once, one clean pass, one engine call per
sample, and each store equal to the store of running its recipe alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import flowtrace.pipeline.analysis as analysis_module
from flowtrace.engine.fast import FastEngine, PendingKnockout
from flowtrace.errors import OptionError
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import open_cube

RECIPES = ("cross_frame", "vql_to_ql", "logit_lens")
LIMIT = 4


def options(out: Path, **kw) -> RunOptions:
    return RunOptions(out=out, limit=LIMIT, sample_mode="all", plot=False, **kw)


def counting(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, int], list[str]]:
    """Calls of the pass's stages, counted, and the fast engine's in the order they ran."""
    counts = {"decode": 0, "clean": 0, "launch": 0}
    order: list[str] = []
    frames, clean, launch, result = (
        analysis_module.sample_frames,
        FastEngine.clean,
        FastEngine.launch,
        PendingKnockout.result,
    )

    def count(name, fn):
        def wrapped(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            order.append(name)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(analysis_module, "sample_frames", count("decode", frames))
    monkeypatch.setattr(FastEngine, "clean", count("clean", clean))
    monkeypatch.setattr(FastEngine, "launch", count("launch", launch))
    monkeypatch.setattr(PendingKnockout, "result", count("result", result))
    return counts, order


def assert_same_stores(a_path: Path, b_path: Path) -> None:
    a, b = open_cube(a_path), open_cube(b_path)
    assert a.sizes == b.sizes and set(a.variables) == set(b.variables)
    assert (a["status"].values == "ok").all()
    for name in a.variables:
        x, y = a[name].values, b[name].values
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-6, err_msg=name)
        else:
            assert (x == y).all(), name
    differ = {k for k in a.attrs if a.attrs[k] != b.attrs.get(k)}
    assert differ <= {"created", "git_commit"}, differ  # others commit while it runs


def test_one_pass_equals_each_recipe_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    recipes = [load_recipe(name) for name in RECIPES]
    alone = {r.name: run(r, options(tmp_path / f"{r.name}.zarr")).store for r in recipes}
    counts, order = counting(monkeypatch)
    results = run(recipes, options(tmp_path / "pass"))
    # logit_lens reads the model through its own (reference) engine: its clean pass is its own.
    assert counts == {"decode": LIMIT, "clean": LIMIT, "launch": LIMIT, "result": LIMIT}
    # logit_lens runs the model in its fill: each sample is finished before the next starts.
    engine_calls = [name for name in order if name != "decode"]
    assert engine_calls == ["clean", "launch", "result"] * LIMIT, engine_calls
    assert [r.store for r in results] == [tmp_path / "pass" / f"{n}.zarr" for n in RECIPES]
    for recipe, result in zip(recipes, results, strict=True):
        assert_same_stores(alone[recipe.name], result.store)


def test_knockouts_of_one_sample_run_beside_the_next_clean_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A pass of knockout recipes keeps one sample in flight: sample i+1's clean pass and
    knockouts start before sample i is read back, and every store is still its recipe's own."""
    recipes = [load_recipe(name) for name in ("cross_frame", "vq_to_true_option")]
    alone = {r.name: run(r, options(tmp_path / f"{r.name}.zarr")).store for r in recipes}
    counts, order = counting(monkeypatch)
    results = run(recipes, options(tmp_path / "pass"))
    engine_calls = [name for name in order if name != "decode"]
    overlapped = ["clean", "launch"] + ["clean", "launch", "result"] * (LIMIT - 1) + ["result"]
    assert engine_calls == overlapped, engine_calls
    for recipe, result in zip(recipes, results, strict=True):
        assert_same_stores(alone[recipe.name], result.store)


@pytest.mark.parametrize("where", ["starting", "waiting"])
def test_an_interrupt_keeps_the_sample_in_flight(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Interrupted while the third sample starts, or while the pass waits for its frames, the
    pass still records the second, whose knockouts were in flight; the rerun resumes after it
    and ends with every sample once."""
    import flowtrace.pipeline.passes as passes

    real_start, real_prefetched, started = passes.start_sample, passes.prefetched, []

    def interrupted_start(group, sample, prepared=None):
        started.append(sample.id)
        if len(started) == 3:
            raise KeyboardInterrupt
        return real_start(group, sample, prepared)

    def interrupted_wait(todo, load, ahead):
        for index, item in enumerate(real_prefetched(todo, load, ahead)):
            if index == 2:
                raise KeyboardInterrupt
            started.append(item[0].id)
            yield item

    if where == "starting":
        monkeypatch.setattr(passes, "start_sample", interrupted_start)
    else:
        monkeypatch.setattr(passes, "prefetched", interrupted_wait)
    out = tmp_path / "cf.zarr"
    with pytest.raises(KeyboardInterrupt):
        run(load_recipe("cross_frame"), options(out))
    assert list(open_cube(out)["sample"].values) == started[:2]
    monkeypatch.undo()
    result = run(load_recipe("cross_frame"), options(out))
    samples = list(open_cube(out)["sample"].values)
    assert result.resumed == 2 and samples[:2] == started[:2]
    assert len(samples) == len(set(samples)) == LIMIT


def test_a_recipe_needing_eager_attention_runs_alone(tmp_path: Path):
    recipes = [load_recipe("cross_frame"), load_recipe("attention_map")]
    with pytest.raises(OptionError, match="attention_map needs eager attention"):
        run(recipes, options(tmp_path / "pass"))


def test_skipped_samples_store_no_edge_count(tmp_path: Path):
    """A sample left out by sample_mode has blocked_edges missing, not 0 ("nothing cut")."""
    out = tmp_path / "wrong.zarr"
    run(load_recipe("cross_frame"), RunOptions(out=out, limit=LIMIT, sample_mode="wrong"))
    ds = open_cube(out)
    skipped = ds["status"].values == "skipped"
    assert skipped.all()  # the toy answers every held-out sample right
    assert np.isnan(ds["blocked_edges"].values).all()
    analysed = open_cube(run(load_recipe("cross_frame"), options(tmp_path / "all.zarr")).store)
    assert (analysed["blocked_edges"].values > 0).all()


def test_prefetch_loads_the_next_samples_while_the_caller_works():
    """The loader runs ahead in its thread: while the caller holds sample i, samples up to
    i + ahead are loading or loaded; a SampleError comes back in order instead of stopping."""
    import threading

    from flowtrace.data import SampleError
    from flowtrace.pipeline.prefetch import prefetched

    started: list[int] = []
    lock = threading.Lock()

    def load(i: int) -> int:
        with lock:
            started.append(i)
        if i == 3:
            raise SampleError("bad video")
        return i * 10

    seen = []
    for i, (sample, got) in enumerate(prefetched(range(8), load, ahead=2)):
        deadline = 50
        while len(started) < min(8, i + 3) and deadline:  # the two after it were submitted
            threading.Event().wait(0.01)
            deadline -= 1
        assert len(started) >= min(8, i + 3), (i, started)
        seen.append((sample, str(got) if isinstance(got, SampleError) else got))
    assert seen == [(0, 0), (1, 10), (2, 20), (3, "bad video"), (4, 40), (5, 50), (6, 60), (7, 70)]
    assert started == list(range(8))  # one worker: in order


def test_stores_name_no_absolute_path_unless_asked(tmp_path: Path):
    """A shared store carries no home folder: videos relative to the data root, the data and the
    model as the user named them; absolute paths only with absolute_paths."""
    from flowtrace.data.sources import video_file
    from flowtrace.pipeline.options import resolve_data

    root = str(resolve_data("toy").root)
    shared = open_cube(run(load_recipe("logit_lens"), options(tmp_path / "a.zarr")).store)
    texts = [str(v) for v in shared.attrs.values()] + [str(v) for v in shared["video"].values]
    assert not [t for t in texts if root in t or str(Path.home()) in t]
    first = str(shared["video"].values[0])
    assert not Path(first).is_absolute() and first.endswith(".mp4")
    assert video_file(shared.attrs, first).is_file()
    full = run(load_recipe("logit_lens"), options(tmp_path / "b.zarr", absolute_paths=True))
    absolute = open_cube(full.store)
    assert absolute.attrs["data_root"] == root
    assert Path(str(absolute["video"].values[0])) == video_file(shared.attrs, first)


def test_a_pass_file_runs_its_recipes_from_the_cli(tmp_path: Path):
    """`flowtrace run recipes/paper.py` is the four sweeps in one pass, a store each."""
    from typer.testing import CliRunner

    from flowtrace.cli import app
    from flowtrace.recipe import load_recipes, pass_members

    names = [r.name for r in load_recipes("recipes/paper.py")]
    assert names == ["cross_frame", "vql_to_ql", "question_options_to_last", "vq_to_true_option"]
    assert pass_members(Path("recipes/cross_frame.py")) is None
    out = tmp_path / "paper"
    done = CliRunner().invoke(app, ["run", "recipes/paper.py", "--limit", "2", "--out", str(out)])
    assert done.exit_code == 0, done.output
    for name in names:
        ds = open_cube(out / f"{name}.zarr")
        assert ds.attrs["recipe"] == name and (ds["status"].values == "ok").all()
        assert f"{name}: samples: 2 analysed" in done.output


def test_a_fast_engine_fallback_is_in_the_store_and_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A shortcut that breaks (here: its rows nudged) falls back to the reference path, and
    says so: per sample in the store (`engine_note`), and in the run's summary."""
    from flowtrace.cli.run import summary
    from flowtrace.engine import FastEngineFallback

    real = FastEngine._recompute

    def broken(self, capture, rows, flat, allowed=None, forked=None):
        probs = real(self, capture, rows, flat, allowed, forked)
        return probs.roll(1, dims=-1)  # a shortcut that gets the answer wrong

    monkeypatch.setattr(FastEngine, "_recompute", broken)
    with pytest.warns(FastEngineFallback):
        result = run(load_recipe("cross_frame"), options(tmp_path / "fb.zarr"))
    ds = open_cube(result.store)
    assert (ds["engine"].values == "reference").all()
    notes = [str(n) for n in ds["engine_note"].values]
    assert all("differs from the clean pass" in n for n in notes), notes
    assert sum(result.fallbacks.values()) == LIMIT
    printed = []
    monkeypatch.setattr(
        "flowtrace.cli.common.console.print", lambda text, **kw: printed.append(text)
    )
    summary("", result, "all", False, 1.0)
    assert any("fast engine fell back" in line and f"{LIMIT} samples" in line for line in printed)
    assert not any("[bold" in str(line) for line in printed)  # styled, not markup printed as is


@pytest.mark.parametrize(
    ("given", "on_this_cpu", "ahead"),
    [(None, True, 0), (None, False, 2), (3, True, 3), (0, False, 0)],
)
def test_prefetch_defaults_by_where_the_model_computes(given, on_this_cpu: bool, ahead: int):
    """None means in line where the model computes on this machine's CPU (its cores are busy),
    ahead where it computes elsewhere (a GPU, a server); a given count is kept."""
    from flowtrace.pipeline.options import settle
    from flowtrace.tokens.sweep import Sweep

    options = RunOptions(prefetch=given, sweep=Sweep(window=1))
    assert settle(options, 4, 2, 8, lambda f: f, on_this_cpu).prefetch == ahead


@pytest.mark.parametrize(
    ("given", "serve", "ahead"), [(None, None, 0), (2, None, 2), (None, "local", 2)]
)
def test_the_pass_prefetches_as_settled(given, serve, ahead: int, tmp_path, monkeypatch):
    """A CPU run decodes in line unless told otherwise, one whose traces run on a server
    decodes ahead; the pass hands the loader that count."""
    import flowtrace.pipeline.passes as passes

    real_prefetched, asked = passes.prefetched, []

    def recorded(todo, load, count):
        asked.append(count)
        return real_prefetched(todo, load, count)

    monkeypatch.setattr(passes, "prefetched", recorded)
    out = tmp_path / "v.zarr"
    run(
        load_recipe("vql_to_ql"),
        RunOptions(out=out, limit=1, plot=False, prefetch=given, serve=serve),
    )
    assert asked == [ahead]
