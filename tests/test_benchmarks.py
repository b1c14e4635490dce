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
