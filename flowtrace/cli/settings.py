"""The `run` command's options, built from the run's declared settings (`pipeline.options`): a
setting added there is an option here, in its panel, with its help, choices and bounds."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer

from flowtrace.pipeline.options import SWEEP_PARTS, RunOptions, Setting, settings
from flowtrace.tokens.sweep import Sweep

# A setting whose option has another name (tasks: --task; a sweep's style: --window-style).
ALIASES = {s.name: s.cli_name for s in settings() if s.cli_name != s.name}


def offered() -> list[Setting]:
    """The settings `flowtrace run` offers, in the order its options are listed."""
    return [s for s in settings() if s.panel]


def option(setting: Setting, panel: str | None = None, default_note: str = "") -> Any:
    """The setting's typer option, as an annotation (`Annotated[type, typer.Option(...)]`), in
    `panel` (default: the setting's own); `default_note`: where the default comes from, for a
    command whose default is not the run's (the option then takes None for "not given")."""
    kind = Literal[setting.choices] if setting.choices else setting.type
    if default_note:
        kind = kind | None
    flag = "--" + setting.cli_name.replace("_", "-")
    names = (f"{flag}/--no-{flag[2:]}",) if setting.toggle else ()
    info = typer.Option(
        *names,
        help=say_flags(f"{setting.help} {default_note}".strip(), declared_flag),
        rich_help_panel=panel or setting.panel or None,
        min=setting.min,
        show_default=setting.show_default,
    )
    return Annotated[kind, info]


def shared_option(name: str, default_note: str = "") -> Any:
    """The option of a run setting that another command takes with the same meaning, among that
    command's other options (`default_note`: see `option`)."""
    setting = next(s for s in settings() if s.name == name)
    return option(setting, panel="Options", default_note=default_note)


def parameters() -> list[inspect.Parameter]:
    """The `run` function's keyword parameters, one per offered setting."""
    return [
        inspect.Parameter(
            s.cli_name, inspect.Parameter.KEYWORD_ONLY, default=s.default, annotation=option(s)
        )
        for s in offered()
    ]


def run_options(given: dict[str, Any]) -> RunOptions:
    """RunOptions from the options as typer parsed them (a sweep's four parts made one Sweep)."""
    values: dict[str, Any] = {}
    sweep: dict[str, Any] = {}
    for setting in offered():
        value = given[setting.cli_name]
        if isinstance(value, list | tuple):
            value = list(value) or None  # a repeatable option given never: its default
        (sweep if setting in SWEEP_PARTS else values)[setting.name] = value
    return RunOptions(**values, sweep=Sweep(**sweep))


def declared_flag(name: str) -> str | None:
    """The flag of one of the settings `flowtrace run` offers (None: not one)."""
    known = {s.name: s.cli_name for s in settings() if s.panel}
    return "--" + known[name].replace("_", "-") if name in known else None


# A setting given a value (`window=5`, `device='cpu'`) after a space, `(`, `,` or a backtick
# (never inside a path) and not as a Python call's keyword (`Sweep(window=…)`); and a setting
# named bare ("the out setting").
_ASSIGNED = re.compile(r"(?<![^\s(`,])([a-z][a-z_]*)=(\S*)")
_NAMED = re.compile(r"\bthe ([a-z][a-z_]*) setting\b")
_CALL = re.compile(r"\b[A-Za-z_]\w*\([^()]*\)")


def say_flags(text: str, flags: Callable[[str], str | None]) -> str:
    """`text` with each setting it names said as its flag (`window=5` -> `--window 5`,
    `remote=True` -> `--remote`, `the out setting` -> `--out`); a name `flags` knows no flag of
    stays as it is, and so does anything inside a call (`Sweep(window=…)`)."""
    calls = [m.span() for m in _CALL.finditer(text)]

    def assigned(match: re.Match) -> str:
        flag = flags(match[1])
        if not flag or any(a <= match.start() < b for a, b in calls):
            return match[0]
        value = match[2]
        word = value.rstrip(":;,.)")
        if word in ("True", "False"):  # a switch: given or not
            return (flag if word == "True" else flag.replace("--", "--no-", 1)) + value[len(word) :]
        return f"{flag} {value}"

    def named(match: re.Match) -> str:
        return flags(match[1]) or match[0]

    return _NAMED.sub(named, _ASSIGNED.sub(assigned, text))
