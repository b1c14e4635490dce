"""Bad input through the CLI, one row per case: argv -> exit code -> message -> the store after.

Adding a case is one line in CASES. `{name}` in argv is a fixture path (see `paths`); `{common}`
is a run on the tiny model and data writing `{out}`. What the store holds after:
  "no store"             nothing was written at --out
  "unchanged"            --out held a finished store before; it is byte for byte the same after
  "N samples"            the store holds N samples
  "N samples, K failed"  … of which K failed (each with its reason)
  "no samples"           a store none of whose samples were saved whole
Rows run in-process through typer's CliRunner; a row with `env` runs in a subprocess, for
settings read when a library is imported. docs/errors.md lists the same errors with their fixes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from bad_inputs import bad_input_paths
from read_only import sealed_copy
from store_cases import altered_stores, full_disk, held
from typer.testing import CliRunner

from flowtrace.cli import app

ROOT = Path(__file__).resolve().parents[1]


class Case(NamedTuple):
    name: str
    argv: str
    code: int
    fragment: str
    after: str
    env: dict[str, str] | None = None  # run in a subprocess with these variables
    repeat: int = 1  # run this many times, check the last (resume)
    interrupt_after: int | None = None  # Ctrl-C once this many samples are done
    disk_full_after: int | None = None  # the disk fills once zarr has written this many files


RUN = "run cross_frame {common}"
STORE_AT = "run cross_frame --model {model} --data {data} --device cpu --out"
CASES = [
    # recipes: checked before the model loads (the model given here does not exist)
    Case("missing recipe", "run recipes/nope.py --out {out}", 2,
         "recipe file 'recipes/nope.py' does not exist; shipped recipes:", "no store"),
    Case("recipe syntax error", "run {syntax_recipe} --model /no/such/model --out {out}", 2,
         "syntax.py', line 3: '(' was never closed", "no store"),
    Case("recipe name error", "run {name_recipe} --model /no/such/model --out {out}", 2,
         "undefined.py', line 2: NameError: name 'EDGES' is not defined", "no store"),
    Case("unknown group", "run {typo_recipe} --model /no/such/model --out {out}", 2,
         "edge 'vidoe -> last' names unknown group 'vidoe'; did you mean 'video'?", "no store"),
    Case("unknown family", "run {family_recipe} --model /no/such/model --out {out}", 2,
         "unknown group family 'frames[…]'; did you mean 'frame'?", "no store"),
    Case("unknown group, store kept", "run {typo_recipe} --out {out}", 2,
         "names unknown group 'vidoe'", "unchanged"),
    # options refused by the CLI before anything runs
    Case("frames 0", f"{RUN} --frames 0", 2,
         "Invalid value for '--frames': Input should be greater than or equal to 1", "no store"),
    Case("frames negative", f"{RUN} --frames -3", 2, "Invalid value for '--frames'", "no store"),
    Case("batch size 0", f"{RUN} --batch-size 0", 2, "Invalid value for '--batch-size'",
         "no store"),
    Case("limit 0", f"{RUN} --limit 0", 2, "Invalid value for '--limit'", "no store"),
    Case("sample mode", f"{RUN} --sample-mode best", 2,
         "'best' is not one of 'correct', 'wrong', 'all'", "no store"),
    Case("window style", f"{RUN} --window-style diagonal", 2,
         "'diagonal' is not one of 'center', 'inverse', 'top_down', 'bottom_up'", "no store"),
    Case("engine", f"{RUN} --engine turbo", 2, "'turbo' is not one of 'fast', 'reference'",
         "no store"),
    Case("executor", f"{RUN} --executor dask", 2, "'dask' is not one of 'serial', 'ray'",
         "no store"),
    Case("attn", f"{RUN} --attn flash", 2, "'flash' is not one of 'sdpa', 'eager'", "no store"),
    Case("dtype", f"{RUN} --dtype int8", 2,
         "'int8' is not one of 'auto', 'float32', 'bfloat16', 'float16'", "no store"),
    Case("task", f"{RUN} --task nope", 2, "--task 'nope' is not a task of", "no store"),
    Case("ratio", f"{RUN} --ratio 2.5", 2, "--ratio 2.5 is above 1 but not a whole count",
         "no store"),
    # data
    Case("data is a file", "run cross_frame --model {model} --data {annotation} --out {out}", 2,
         "--data {annotation} is a file, not a dataset folder; pass the folder", "no store"),
    Case("data kind with a file", "run cross_frame --data tvbench:{annotation} --out {out}", 2,
         "is a file, not a folder; give tvbench:FOLDER", "no store"),
    Case("data missing", "run cross_frame --data /no/such/data --out {out}", 2,
         "--data /no/such/data: no such folder", "no store"),
    # checkpoints: refused before the model is built, naming the file
    Case("garbage safetensors", "run cross_frame {common_with_model} {garbage_model}", 2,
         "model.safetensors is not a readable safetensors file", "no store"),
    Case("truncated safetensors", "run cross_frame {common_with_model} {truncated_model}", 2,
         "incomplete metadata, file not fully covered", "no store"),
    Case("no weights", "run cross_frame {common_with_model} {weightless_model}", 2,
         "no weights found: looked for model.safetensors", "no store"),
    Case("pickle weights", "run cross_frame {common_with_model} {pickle_model}", 2,
         "pytorch_model.bin is a pickle checkpoint holding Python objects beside its tensors; "
         "flowtrace does not unpickle them", "no store"),
    Case("hub offline", "run cross_frame --model someorg/no-such-model --out {out}", 2,
         "could not reach the Hugging Face Hub for config.json (HF_HUB_OFFLINE is set)",
         "no store", env={"HF_HUB_OFFLINE": "1"}),
    # one bad entry fails alone, with its reason; the run goes on and resumes past it
    Case("30 options", "run cross_frame {common_bad} --sample-mode all", 0,
         "has 30 options, more than the 26 letters A–Z", "3 samples, 2 failed"),
    Case("video outside the root", "run cross_frame {common_bad} --sample-mode all", 0,
         "names a video outside the dataset folder", "3 samples, 2 failed"),
    Case("resume past bad entries", "run cross_frame {common_bad} --sample-mode all", 0,
         "resumed: 3 samples were already in", "3 samples, 2 failed", repeat=2),
    # Ctrl-C keeps what is written and says how to go on
    Case("ctrl-c", f"{RUN} --limit 3", 130,
         "interrupted: 1 sample of cross_frame kept in {out} resume with: flowtrace run "
         "cross_frame", "1 samples", interrupt_after=1),
    Case("ctrl-c with --overwrite", f"{RUN} --limit 3 --overwrite", 130,
         "--limit 3 --out {out}", "1 samples", interrupt_after=1),
    Case("ctrl-c, two recipes", "run cross_frame vql_to_ql {common} --limit 3", 130,
         "resume with: flowtrace run cross_frame vql_to_ql --model",
         "cross_frame.zarr: 1 samples; vql_to_ql.zarr: 1 samples", interrupt_after=1),
    # check
    Case("check a good store", "check {store}", 0, "ok: 2 samples,", "no store"),
    Case("check no store", "check {out}", 2, "error:", "no store"),
    Case("check a damaged store", "check {damaged}", 1, "1 problem in {damaged}", "no store"),
    Case("check an edited sample count", "check {phantom}", 1,
         "its metadata (shape, type or codecs) was changed after it was written", "no store"),
    Case("check swapped chunks", "check {swapped}", 1,
         "does not hold what was written there (a chunk of another array or store, or changed)",
         "no store"),
    Case("check a store from before checksums", "check {older}", 3,
         "unverified: store {older} was written before checksums", "no store"),
    Case("show damaged metadata", "show {broken_meta}", 2,
         "store {broken_meta}: its metadata (zarr.json) is damaged (", "no store"),
    # stores: flowtrace touches only folders it made, and names damage
    Case("overwrite a file", f"{STORE_AT} {{a_file}} --overwrite", 2,
         "store {a_file} is a file, not a store folder", "no store"),
    Case("out under a file", f"{STORE_AT} {{a_file}}/cube.zarr", 2,
         "store {a_file}/cube.zarr cannot be written", "no store"),
    Case("out is another zarr", f"{STORE_AT} {{foreign}}", 2,
         "store {foreign} exists and is not a flowtrace store", "no store"),
    Case("overwrite a folder of files", f"{STORE_AT} {{user_folder}} --overwrite", 2,
         "store {user_folder} exists and is not a flowtrace store", "no store"),
    Case("query a damaged store", "query {damaged} --mean sample", 2,
         "is damaged (", "no store"),
    Case("out is a subset saved by xarray", f"{STORE_AT} {{subset}} --overwrite", 2,
         "store {subset} exists and is not a flowtrace store (it has no .flowtrace-store marker",
         "no store"),
    Case("out inside a store", f"{STORE_AT} {{store}}/inner.zarr", 2,
         "store {store}/inner.zarr lies inside the flowtrace store {store}; choose an out outside",
         "no store"),
    # refused before the model loads: the model given here does not exist
    Case("store being written",
         "run cross_frame --model /no/such/model --data {data} --device cpu --out {held}", 2,
         "store {held} is being written by another run (pid", "no store"),
    Case("full disk", f"{RUN} --limit 2", 2,
         "store {out}: saving samples failed (No space left on device); the 0 samples saved "
         "before are whole and kept: free space", "no samples", disk_full_after=5),
    # issue 33: figures, report pages and tables (never over another's file, whole or not at all)
    Case("report out is a folder", "report {store} --out {user_folder}", 2,
         "--out {user_folder}: is a folder; give the name of a file to write", "no store"),
    Case("query out is a folder", "query {store} --mean sample --out {user_folder}", 2,
         "--out {user_folder}: is a folder; give the name of a file to write", "no store"),
    Case("report over a file flowtrace did not write", "report {store} --out {a_file}", 2,
         "--out {a_file}: exists, and flowtrace did not write it for flowtrace report (or it "
         "was changed since); it is left as it was", "no store"),
    Case("plot beside a read-only store", "plot {read_only}/store.zarr", 2,
         "cannot be written (Permission denied); choose another out you can write to",
         "no store"),
    Case("report into a read-only folder", "report {store} --out {read_only}/report.html", 2,
         "--out {read_only}/report.html: cannot be written (Permission denied)", "no store"),
    Case("figure too large", "plot {shipped}/flow_map.zarr --out {out}-figure", 2,
         "over the 10 a figure draws; nothing was drawn", "no store",
         env={"FLOWTRACE_FIGURE_CELLS": "10"}),
    Case("markup in a path", "show {out}/[/]x[bold].zarr", 2,
         "store {out}/[/]x[bold].zarr does not exist", "no store"),
    # issue 33: bounded inputs (each ran for minutes without a message)
    Case("frames too many", f"{RUN} --frames 10000", 2,
         "--frames 10000: give at most 1024", "no store"),
    Case("frames beyond the context", f"{RUN} --frames 64", 2,
         "--frames 64: 64 frames make 1024 video tokens, which leave no room for the question "
         "in the model's context of 1024 tokens", "no store"),
    Case("generate too long", f"{RUN} --generate 100000", 2,
         "--generate 100000: give at most 8192", "no store"),
    Case("generate beyond the context", f"{RUN} --generate 1000", 2,
         "--generate 1000: a reply that long after 128 video tokens runs past the model's "
         "context of 1024 tokens", "no store"),
    Case("question too long",
         "run cross_frame --model {model} --data {long_question_data} --device cpu --out {out} "
         "--sample-mode all", 0,
         "words), beyond the model's context of 1024 tokens (max_position_embeddings in its "
         "config); shorten the question", "2 samples, 1 failed"),
    # issue 33: tracebacks that are one line
    Case("missing tokenizer", "run cross_frame {common_with_model} {no_tokenizer_model}", 2,
         "could not load its processor (the folder has no tokenizer.json)", "no store"),
    Case("broken tokenizer", "run cross_frame {common_with_model} {broken_tokenizer_model}", 2,
         "could not load its processor (tokenizer.json is not valid JSON:", "no store"),
    Case("config and weights disagree", "run cross_frame {common_with_model} {mismatch_model}", 2,
         "has shape (64, 192) in the checkpoint, the config implies (64, 200) (and 11 more); "
         "config.json and the weights are of different models", "no store"),
    Case("pickled lora", "run cross_frame {common_with_model} {model} --lora {pickle_lora}", 2,
         "--lora {pickle_lora}: adapter_model.bin is a pickle checkpoint holding Python objects",
         "no store"),
    Case("seed out of range", f"{RUN} --seed 100000000000000000000000", 2,
         "--seed 100000000000000000000000: give a whole number from 0 to 4294967295",
         "no store"),
    Case("empty edges", "run {empty_recipe} --model /no/such/model --out {out}", 2,
         "empty_edges.py': `edges` is empty, so there is nothing to knock out", "no store"),
    # issue 33: silently accepted before
    Case("NaN in config", "run cross_frame {common_with_model} {nan_config_model}", 2,
         "config.json holds nan at text_config.rms_norm_eps", "no store"),
    Case("NaN weight", "run cross_frame {common_with_model} {nan_weight_model} --limit 2", 0,
         "failed ×2: the model's clean pass gave NaN or infinite probabilities",
         "2 samples, 2 failed"),
    Case("adapter of another family",
         "run cross_frame {common_with_model} {model} --adapter pllava", 2,
         "is a 'llava_next_video' checkpoint, which the llava_next_video adapter reads, not pllava",
         "no store"),
    # issue 33: misleading before
    Case("mistyped model path",
         "run cross_frame --data {data} --device cpu --out {out} --model ./no-such-checkpoint", 2,
         "--model ./no-such-checkpoint: no such folder: no-such-checkpoint does not exist",
         "no store"),
]  # fmt: skip


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_model_dir: Path):
    import torch

    base = tmp_path_factory.mktemp("errors")
    found = {"data": tiny_data, "model": tiny_model_dir}
    found["annotation"] = next((tiny_data / "json").glob("*.json"))
    recipes = {
        "syntax": '\nrecipe = Knockout("s", "s", ["video -> last"]\n',
        "undefined": 'recipe = Knockout("u", "u", EDGES)\n',
        "typo": 'recipe = Knockout("t", "t", ["vidoe -> last"])\n',
        "family": 'recipe = Knockout("f", "f", ["frames[<t] -> frame[t]"])\n',
    }
    header = "from flowtrace.recipe import Knockout\n"
    for name, text in recipes.items():
        (base / f"{name}.py").write_text(header + text)
    found |= {
        "syntax_recipe": base / "syntax.py",
        "name_recipe": base / "undefined.py",
        "typo_recipe": base / "typo.py",
        "family_recipe": base / "family.py",
    }

    def model_copy(name: str) -> Path:
        folder = base / name
        shutil.copytree(tiny_model_dir, folder)
        return folder

    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    (model_copy("garbage") / "model.safetensors").write_bytes(os.urandom(4096))
    (model_copy("truncated") / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (model_copy("weightless") / "model.safetensors").unlink()
    pickled = model_copy("pickled")
    from safetensors.torch import load_file

    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save({**state, "args": argparse_namespace()}, pickled / "pytorch_model.bin")
    for name in ("garbage", "truncated", "weightless"):
        found[f"{name}_model"] = base / name
    found["pickle_model"] = pickled
    found["bad_data"] = bad_entries(tiny_data, base / "bad_data")
    found |= bad_input_paths(base, tiny_model_dir, tiny_data)
    found |= foreign_outs(base)
    return found


def foreign_outs(base: Path) -> dict[str, Path]:
    """What `--out` may hit that flowtrace did not make: a file, another zarr, user files."""
    import numpy as np
    import xarray as xr

    a_file = base / "notes.txt"
    a_file.write_text("not a store")
    foreign = base / "foreign.zarr"
    xr.Dataset({"x": ("t", np.arange(3))}).to_zarr(foreign, zarr_format=3, consolidated=False)
    user_folder = base / "thesis"
    user_folder.mkdir()
    (user_folder / "chapter1.tex").write_text("precious")
    return {"a_file": a_file, "foreign": foreign, "user_folder": user_folder}


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=1e-3)  # what training scripts often pickle beside the weights


def bad_entries(data: Path, root: Path) -> Path:
    """One task: a good entry, one with 30 options, one whose video climbs out of the root."""
    shutil.copytree(data, root)
    keep = root / "json" / "object_count.json"
    for other in (root / "json").glob("*.json"):
        if other != keep:
            other.unlink()
    good = json.loads(keep.read_text())[0]
    many = [f"choice {i}" for i in range(30)]
    entries = [good, {**good, "candidates": many, "answer": many[0]}]
    entries.append({**good, "video": "../../../../../../../../etc/passwd"})
    keep.write_text(json.dumps(entries))
    return root


@pytest.fixture(scope="module")
def store(paths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-sample store (what `unchanged` rows find at --out, and `check` reads)."""
    out = tmp_path_factory.mktemp("reference") / "store.zarr"
    args = shlex.split(_expand(f"{RUN} --limit 2", paths, out))
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    return out


@pytest.fixture(scope="module")
def altered(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Copies of the finished store changed one way each (tests/store_cases.py), one of them
    held by another process for the module's life."""
    found = altered_stores(store, tmp_path_factory.mktemp("altered"))
    with held(found["held"]):
        yield found


@pytest.fixture(scope="module")
def damaged(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The finished store with random bytes in one chunk of its first array."""
    copy = tmp_path_factory.mktemp("damaged") / "store.zarr"
    shutil.copytree(store, copy)
    chunk = sorted(copy.glob("*/c/*"))[0]
    chunk.write_bytes(os.urandom(200))
    return copy


def _expand(argv: str, paths: dict[str, Path], out: Path) -> str:
    common = "--model {model} --data {data} --device cpu --out {out}"
    common_bad = "--model {model} --data {bad_data} --device cpu --out {out}"
    text = argv.replace("{common_with_model}", "--data {data} --device cpu --out {out} --model")
    text = text.replace("{common_bad}", common_bad).replace("{common}", common)
    return text.format(out=out, **{k: str(v) for k, v in paths.items()})


def _digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(folder)).encode() + file.read_bytes())
    return digest.hexdigest()


def _flat(text: str) -> str:
    """Output with rich's box drawing removed and whitespace collapsed (boxes wrap lines)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _invoke(case: Case, args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    if case.env is not None:
        env = {**os.environ, "COLUMNS": "200", **case.env}
        env["HF_HOME"] = str(Path(args[args.index("--out") + 1]).parent / "hf-home")
        done = subprocess.run(
            [sys.executable, "-m", "flowtrace", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout + done.stderr
    if case.interrupt_after is not None:
        _interrupt_after(case.interrupt_after, monkeypatch)
    if case.disk_full_after is not None:
        full_disk(monkeypatch, case.disk_full_after)
    done = CliRunner().invoke(app, args, env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception  # a traceback is a failed case
    return done.exit_code, done.output


def _interrupt_after(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C as the user presses it: during the run, once `n` samples are done."""
    import flowtrace.runner

    real = flowtrace.runner.run

    def run(recipe, options, progress=None, **kwargs):
        def pressed(done: int, total: int, status: str) -> None:
            if progress:
                progress(done, total, status)
            if done >= n:
                raise KeyboardInterrupt

        return real(recipe, options, progress=pressed, **kwargs)

    monkeypatch.setattr(flowtrace.runner, "run", run)


def _held(out: Path) -> str:
    """What the store at `out` holds, in the table's words."""
    if not out.exists():
        return "no store"
    if (out / ".flowtrace-store").exists() and not (out / "zarr.json").exists():
        return "no samples"  # a store none of whose samples were saved whole
    if not (out / "zarr.json").exists():  # several recipes: a folder of NAME.zarr stores
        return "; ".join(f"{p.name}: {_held(p)}" for p in sorted(out.glob("*.zarr")))
    import xarray as xr

    ds = xr.open_zarr(out)
    failed = int((ds["status"].values == "failed").sum())
    n = ds.sizes["sample"]
    return f"{n} samples, {failed} failed" if failed else f"{n} samples"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_error_case(
    case: Case, paths, store: Path, damaged: Path, altered, tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # default stores (results/…) land here, never in the repo
    out = tmp_path / "out.zarr"
    paths = {**paths, "store": store, "damaged": damaged, **altered}
    if case.after == "unchanged":
        shutil.copytree(store, out)
        before = _digest(out)
    paths["shipped"] = ROOT / "results" / "toy"  # committed stores, with analysed samples
    if "{read_only}" in case.argv:
        paths["read_only"] = sealed_copy(
            paths["shipped"] / "cross_frame.zarr", tmp_path / "read-only", monkeypatch
        )
    args = shlex.split(_expand(case.argv, paths, out))
    for _ in range(case.repeat):
        code, output = _invoke(case, args, monkeypatch)
    assert code == case.code, output
    fragment = _expand(case.fragment, paths, out)
    assert _flat(fragment) in _flat(output), output
    if case.code == 2 and "Invalid value for" not in output:  # typer's own usage box aside
        # A run's progress bar may come first (a store that fails mid-run): not a message.
        lines = [line for line in output.splitlines() if line.strip() and "━" not in line]
        assert lines[-1].startswith("error:") and len(lines) == 1, output  # one clear line
    if case.after == "unchanged":
        assert _digest(out) == before
    else:
        assert _held(out) == case.after


def test_the_resume_command_printed_after_ctrl_c_finishes_the_store(
    paths, tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    # No --out: the store is the default one under results/, which the command must name.
    argv = f"run cross_frame --model {paths['model']} --data {paths['data']} --limit 3 --overwrite"
    _interrupt_after(1, monkeypatch)
    done = CliRunner().invoke(app, shlex.split(argv))
    assert done.exit_code == 130, done.output
    (store,) = Path("results", "cross_frame").glob("*.zarr")
    assert f"interrupted: 1 sample of cross_frame kept in {store}" in _flat(done.output)
    command = next(line for line in done.output.splitlines() if line.startswith("resume with:"))
    words = shlex.split(command.removeprefix("resume with:"))
    assert words[:3] == ["flowtrace", "run", "cross_frame"]
    assert "--overwrite" not in words and words[words.index("--out") + 1] == str(store)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    again = CliRunner().invoke(app, words[1:])
    assert again.exit_code == 0, again.output
    assert "resumed: 1 samples were already in" in again.output
    assert _held(store) == "3 samples"


def test_every_case_is_in_the_docs():
    """docs/errors.md lists each case of the table (by its name) with its fix."""
    text = (ROOT / "docs" / "errors.md").read_text()
    missing = [c.name for c in CASES if f"<!-- case: {c.name} -->" not in text]
    assert not missing, f"docs/errors.md lacks {missing}"


def test_the_conversion_the_pickle_error_prints_makes_a_loadable_checkpoint(paths, tmp_path: Path):
    folder = tmp_path / "pickled"
    shutil.copytree(paths["pickle_model"], folder)
    argv = f"run cross_frame --model {folder} --data {paths['data']} --limit 1 --out {tmp_path}/o"
    done = CliRunner().invoke(app, shlex.split(argv))
    assert done.exit_code == 2
    command = _flat(done.output).split('python -c "', 1)[1].split('" and remove', 1)[0]
    subprocess.run([sys.executable, "-c", command], cwd=folder, check=True, timeout=120)
    (folder / "pytorch_model.bin").unlink()
    again = CliRunner().invoke(app, shlex.split(argv))
    assert again.exit_code == 0, again.output
    assert _held(tmp_path / "o") == "1 samples"


def test_the_group_vocabulary_covers_every_group_of_real_layouts(paths):
    """A recipe is checked against layout.py's vocabulary before any model loads; that list
    must hold every group the adapters' layouts really have (multiple-choice and open-ended)."""
    import dataclasses

    from flowtrace.data import read_samples, sample_frames
    from flowtrace.models import load_model
    from flowtrace.tokens.layout import is_group_name

    loaded = load_model(str(paths["model"]), device="cpu")
    sample = read_samples(paths["data"], limit=1)[0]
    open_ended = dataclasses.replace(sample, style="open", answer_prompt=" It is")
    groups = []
    for each in (sample, open_ended):
        prepared = loaded.adapter.prepare(loaded, each, sample_frames(each, 4))
        groups.append(set(prepared.layout.groups))
        unknown = [g for g in prepared.layout.groups if not is_group_name(g)]
        assert not unknown, f"layout.GROUP_NAMES lacks {unknown}"
    plain = {"system", "video", "query", "question", "prompt_tail", "last"}
    assert plain | {"options", "true_option", "option_A", "frame_3"} <= groups[0]
    assert plain <= groups[1] and "option_A" not in groups[1]
    assert not is_group_name("vidoe") and not is_group_name("option_[")
