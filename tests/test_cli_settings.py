"""A run's settings declared once (pipeline.options): the CLI's `run` options are built from the
declarations, and only the CLI says a setting's name as a flag."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import typer
from typer.testing import CliRunner

from flowtrace.cli import app
from flowtrace.cli.common import as_flags
from flowtrace.cli.settings import declared_flag, say_flags
from flowtrace.errors import FlowtraceError, OptionError
from flowtrace.pipeline.options import PANELS, RunOptions, settings

ROOT = Path(__file__).resolve().parents[1]


def run_params() -> dict[str, typer.core.TyperOption]:
    command = typer.main.get_command(app).commands["run"]
    return {p.name: p for p in command.params if p.param_type_name == "option"}


def test_every_offered_setting_is_one_run_option_with_its_declaration():
    params = run_params()
    offered = [s for s in settings() if s.panel]
    assert [params[s.cli_name].name for s in offered] == [p for p in params if p != "help"]
    for setting in offered:
        param = params[setting.cli_name]
        assert setting.panel in PANELS and setting.help, setting.name
        assert param.rich_help_panel == setting.panel
        assert param.default == setting.default, setting.name
        assert getattr(param, "min", None) == setting.min, setting.name
        annotation = param.type_descriptor.annotation
        choices = get_args(annotation) if get_origin(annotation) is Literal else ()
        assert choices == setting.choices, setting.name
    # The flags a user knows, with their defaults, as before the settings were declared.
    assert params["task"].opts == ["--task"] and params["task"].multiple
    assert params["window_style"].opts == ["--window-style"]
    assert params["compile"].secondary_opts == ["--no-compile"]
    assert params["sample_mode"].default == "correct" and params["batch_size"].default == 8
    assert {"plot", "flush_samples", "flush_seconds", "absolute_paths"}.isdisjoint(params)


def test_run_options_from_the_command_line_fill_every_field(monkeypatch):
    """Each option reaches its RunOptions field (the sweep's four parts one Sweep)."""
    import flowtrace.runner

    seen = {}

    def fake_run(recipe, options, progress=None, **kwargs):
        seen["options"] = options
        raise FlowtraceError("stop here")

    monkeypatch.setattr(flowtrace.runner, "run", fake_run)
    argv = "run cross_frame --task A --task B --limit 3 --window 2 --window-style inverse "
    argv += "--sweep 1-3 --heads 0,1 --no-compile --sample-mode all --seed 7 --prefetch 0"
    done = CliRunner().invoke(app, argv.split())
    assert "stop here" in done.output, done.output
    options: RunOptions = seen["options"]
    assert options.tasks == ["A", "B"] and options.limit == 3 and options.seed == 7
    assert options.compile is False and options.prefetch == 0 and options.sample_mode == "all"
    sweep = options.sweep
    assert (sweep.window, sweep.style, sweep.layers, sweep.heads) == (2, "inverse", (1, 3), (0, 1))
    assert options.model == RunOptions().model and options.out is None


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("device='cuda:9': use device=cpu", "--device 'cuda:9': use --device cpu"),
        ("remote=True: no NDIF API key", "--remote: no NDIF API key"),
        ("compile=False here", "--no-compile here"),
        ("drop the adapter setting", "drop --adapter"),
        ("lower the batch_size setting", "lower --batch-size"),
        ("skip it with the tasks setting", "skip it with --task"),
        ("give a Sweep(window=…, style=…)", "give a Sweep(window=…, style=…)"),
        ("store results/limit=3/x.zarr", "store results/limit=3/x.zarr"),
        ("model_type='bert' and sample=x", "model_type='bert' and sample=x"),
        ("the model's context", "the model's context"),
    ],
)
def test_the_cli_says_setting_names_as_flags(text, said):
    assert say_flags(text, declared_flag) == said


def test_an_option_error_leads_with_its_flag():
    assert as_flags(OptionError("tasks", "'x' is not a task")) == "--task 'x' is not a task"
    assert as_flags(OptionError("style", "'d': choose")) == "--window-style 'd': choose"
    assert as_flags(OptionError("layers", "5-2: need")) == "--sweep 5-2: need"
    assert as_flags(OptionError("remote", "model=toy is not")) == "--remote: --model toy is not"
    no_flag = OptionError("flush_seconds", "0: must be above 0")  # a setting of Python's alone
    assert as_flags(no_flag) == "flush_seconds: 0: must be above 0"
    assert as_flags(OptionError("sel", "x")) == "--sel x"  # another command's option


# Flags the library may still spell, by file: whole command lines a user is shown or a file
# records (another tool's too), the reference code's own flags, and sample reasons (stores keep
# them as written).
KEPT = {
    "flowtrace/pathways/find_pathway.py": r"flowtrace pathways|^ --fresh-test $",
    "flowtrace/toy/train.py": r"^ ?--[a-z-]+ $|^ --plant$|flowtrace toy train",
    "flowtrace/models/checkpoint.py": r"--local-dir DIR",
    "flowtrace/scale/ray_executor.py": r"`ray start --head`",
    "flowtrace/pipeline/options.py": r"the reference's --[a-z]+_",
    "flowtrace/data/video.py": r"given with --data$",  # a sample's reason
    "flowtrace/models/hf_families.py": r"\(--frames\)$",  # a sample's reason
    "flowtrace/pipeline/analysis.py": r"^--sample-mode $",  # a skipped sample's reason
}


def test_the_library_spells_no_flag():
    """docs/design.md: only the CLI knows flags; the library names settings (window=5)."""
    flag = re.compile(r"(?<![\w-])--[a-z][a-z_-]*")
    found = []
    for path in sorted((ROOT / "flowtrace").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name.startswith("flowtrace/cli/"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if id(node) in docstrings or not flag.search(node.value):
                continue
            if not re.search(KEPT.get(name, "(?!)"), node.value):
                found.append(f"{name}:{node.lineno}: {node.value.strip()[:60]!r}")
    assert not found, "\n".join(found)
