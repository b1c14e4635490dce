"""A run left to the default compiles its recomputed layers only where that pays: its first
samples run eagerly (first results in seconds on a GPU), and compiling starts after them only
when enough samples are left. The compiler is replaced here by counting wrappers around the
eager layers, so the test sees which path each sample took without paying a compile."""

from __future__ import annotations

from pathlib import Path

import pytest

import flowtrace.engine.compiled as compiled
from flowtrace.recipe import load_recipe
from flowtrace.runner import RunOptions, run

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cross_frame.py"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Compiled-layer calls so far, one entry per finished sample (read by the progress hook)."""
    calls = [0]

    def counting_twins(twins):
        def wrap(twin):
            def call(*args, **kwargs):
                calls[0] += 1
                return twin(*args, **kwargs)

            return call

        return [wrap(twin) for twin in twins]

    monkeypatch.setattr(compiled, "compiled_twins", counting_twins)
    import flowtrace.engine.fast as fast

    monkeypatch.setattr(fast, "compile_default", lambda loaded: True)  # as on CUDA
    monkeypatch.delenv(compiled.COMPILE_ENV, raising=False)
    monkeypatch.setattr(compiled, "EAGER_FIRST_SAMPLES", 2)
    monkeypatch.setattr(compiled, "COMPILE_PAYS_FROM", 3)
    import flowtrace.pipeline.passes as passes

    monkeypatch.setattr(passes, "EAGER_FIRST_SAMPLES", 2)
    monkeypatch.setattr(passes, "COMPILE_PAYS_FROM", 3)
    return calls


def per_sample(counted: list[int], tmp_path: Path, limit: int, **kw) -> list[int]:
    seen: list[int] = []
    options = RunOptions(out=tmp_path / "s.zarr", limit=limit, sample_mode="all", plot=False, **kw)
    run(load_recipe(RECIPE), options, progress=lambda done, total, status: seen.append(counted[0]))
    return seen


def test_a_long_run_starts_eager_and_compiles_after_its_first_samples(counted, tmp_path: Path):
    seen = per_sample(counted, tmp_path, limit=5)
    assert seen[:2] == [0, 0], seen  # the first two samples ran eagerly
    assert seen[2] == 0 or seen[3] > seen[2], seen  # compiled calls from the third sample on
    assert seen[-1] > 0, seen


def test_a_short_run_never_compiles(counted, tmp_path: Path):
    assert per_sample(counted, tmp_path, limit=4)[-1] == 0  # 2 left after the eager two: < 3


def test_an_explicit_compile_setting_compiles_from_the_first_sample(counted, tmp_path: Path):
    seen = per_sample(counted, tmp_path, limit=2, compile=True)
    assert seen[0] > 0, seen


def test_engines_on_one_model_compile_its_layers_once(monkeypatch: pytest.MonkeyPatch):
    """A notebook's next run, or a pass after solo runs, reuses the compiled layers: twins
    compiled per engine piled graphs on the layers' one code object past dynamo's recompile
    limit, and later engines ran their layers eagerly."""
    from flowtrace.engine import FastEngine
    from flowtrace.models import load_model

    made: list[int] = []

    def counting_twins(twins):
        made.append(len(twins))
        return list(twins)

    monkeypatch.setattr(compiled, "compiled_twins", counting_twins)
    loaded = load_model("toy", device="cpu", dtype="float32")
    picked = [FastEngine(loaded, compile=True).recompute_layers.pick(False, True) for _ in "ab"]
    assert made == [loaded.num_layers], made
    assert picked[0][0] is picked[1][0] and picked[0][1] is picked[1][1]
