"""The benchmarks stay runnable: each runs at its smallest shape and its table adds up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_adapters_full_size_runs_tiny_and_the_engines_agree(tmp_path: Path):
    out = tmp_path / "rows.json"
    models = ["LLaVA-NeXT-7B-Video-FT", "Qwen2.5-VL-7B"]
    command = [sys.executable, "adapters_full_size.py", "--device", "cpu", "--shape", "tiny"]
    subprocess.run([*command, "--models", *models, "--json", str(out)], cwd=BENCHMARKS, check=True)
    rows = {row["model"]: row for row in json.loads(out.read_text())}
    assert list(rows) == models
    for row in rows.values():
        t, h, w = (int(x) for x in row["grid"].split("×"))
        assert row["video_tokens"] == t * h * w < row["seq_len"]
        assert row["fast_path"] == "fast" and row["fast_max_abs_dp"] < 1e-5
    assert rows["LLaVA-NeXT-7B-Video-FT"]["grid"] == "8×12×12"  # PLLaVA's default pooling
    assert rows["Qwen2.5-VL-7B"]["grid"].startswith("4×")  # two frames per temporal patch


def test_closing_runs_calls_only_flags_its_benchmarks_take():
    """benchmarks/closing_runs.sh is run on a GPU machine whose device time is scarce: a flag
    renamed in a benchmark must fail here, not there."""
    import re
    import shlex

    script = (BENCHMARKS / "closing_runs.sh").read_text()
    subprocess.run(["bash", "-n", str(BENCHMARKS / "closing_runs.sh")], check=True)
    # Each call: `$PY NAME.py ...` up to its redirection, over continued lines.
    joined = script.replace("\\\n", " ")
    calls = re.findall(r"\$PY (\w+\.py)([^>\n]*)", joined)
    assert {name for name, _ in calls} >= {
        "cli_7b.py", "adapters_full_size.py", "end_to_end.py", "store_cost.py", "programs.py"
    }  # fmt: skip
    flags: dict[str, set[str]] = {}
    for name, rest in calls:
        words = shlex.split(rest)
        flags.setdefault(name, set()).update(w.split("=")[0] for w in words if w.startswith("--"))
    # Every benchmark's --help in one process (their imports, torch's among them, paid once).
    driver = (
        "import contextlib, io, json, runpy, sys\n"
        "sys.path.insert(0, '.')\n"
        "helps = {}\n"
        f"for name in {sorted(flags)!r}:\n"
        "    sys.argv, out = [name, '--help'], io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "        runpy.run_path(name, run_name='__main__')\n"
        "    helps[name] = out.getvalue()\n"
        "print(json.dumps(helps))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", driver], cwd=BENCHMARKS, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    helps = json.loads(done.stdout.strip().splitlines()[-1])
    for name, used in flags.items():
        assert helps[name].startswith("usage:"), (name, helps[name][:200])
        for flag in used:
            assert re.search(rf"{re.escape(flag)}\b", helps[name]), (name, flag)
    # The shapes it names are benchmark shapes.
    sys.path.insert(0, str(BENCHMARKS))
    from reference_engine import SHAPES

    for shape in re.findall(r"SHAPE:-(\w+)", script):
        assert shape in SHAPES, shape
