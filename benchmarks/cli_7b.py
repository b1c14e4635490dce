"""`flowtrace run` as a user types it, at the paper's 7B shape with random weights.

Writes a LLaVA-NeXT-Video-7B model folder holding config.json and the processor files but no
weights (`--random-weights` builds it with seeded random weights on the device), then runs each
command in its own process (the flow map's `flowtrace pathways` curve among them) and prints
one JSON line per command: wall seconds (imports, model build and figures included), exit code
and the last lines of its output. The stores stay under
`--work` for `flowtrace show/check/plot/report` afterwards.

    python benchmarks/cli_7b.py --clips CLIPS --work /tmp/cli7b
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_model(folder: Path, tiny: bool = False, thin: bool = False) -> Path:
    """The 7B model's folder (config and processor, no weights); `tiny`: the toy's shape, for a
    CPU check of the commands themselves; `thin`: the 7B layout (layers, heads, frames, tokens)
    with tiny widths, for a CPU check of what depends on the layout."""
    from transformers import AutoProcessor

    from flowtrace.toy import EMBEDDED_MODEL
    from flowtrace.toy.build import build_config, build_processor

    sys.path.insert(0, str(Path(__file__).parent))
    from reference_engine import seven_b_config

    tokenizer = AutoProcessor.from_pretrained(EMBEDDED_MODEL).tokenizer
    folder.mkdir(parents=True, exist_ok=True)
    if tiny:
        build_config(tokenizer).save_pretrained(folder)
        build_processor(tokenizer).save_pretrained(folder)
    else:
        seven_b_config(tokenizer, "7b-thin" if thin else "7b").save_pretrained(folder)
        build_processor(tokenizer, image_size=336, patch_size=14).save_pretrained(folder)
    return folder


def readme_program(work: Path) -> Path:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- own-recipe -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    path = work / "group_ablation.py"
    path.write_text(block)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated command names")
    parser.add_argument("--tiny", action="store_true", help="the toy's shape (a CPU check)")
    parser.add_argument(
        "--thin", action="store_true", help="the 7B layout with tiny widths (a CPU check)"
    )
    args = parser.parse_args()
    work = args.work
    model = write_model(work / "llava-next-video-random", args.tiny, args.thin)
    common = ["--model", str(model), "--data", str(args.clips), "--limit", str(args.limit)]
    common += ["--sample-mode", "all", "--overwrite", "--random-weights"]
    flowtrace = [sys.executable, "-m", "flowtrace"]
    commands = {
        "cross_frame": [*flowtrace, "run", "recipes/cross_frame.py", *common,
                        "--out", str(work / "cross_frame.zarr")],
        "paper": [*flowtrace, "run", "recipes/paper.py", *common, "--out", str(work / "paper")],
        "readme_program": [*flowtrace, "run", str(readme_program(work)), *common,
                           "--out", str(work / "group_ablation.zarr")],
        # The pathway curve runs the model at each threshold: a flow map first, then the curve.
        "flow_map": [*flowtrace, "run", "recipes/flow_map.py", *common,
                     "--out", str(work / "flow_map.zarr")],
        "pathways": [*flowtrace, "pathways", str(work / "flow_map.zarr"), "--model", str(model),
                     "--random-weights", "--limit", str(args.limit), "--out",
                     str(work / "pathways")],
        "show": [*flowtrace, "show", str(work / "cross_frame.zarr")],
        "check": [*flowtrace, "check", str(work / "cross_frame.zarr")],
    }  # fmt: skip
    only = set(filter(None, args.only.split(",")))
    for name, command in commands.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        tail = (done.stdout + done.stderr).strip().splitlines()[-6:]
        row = {"command": name, "seconds": round(seconds, 1), "rc": done.returncode, "tail": tail}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
