"""What every command shares: the app, the console, one-line errors said as flags, and the
options several commands take."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from flowtrace.cli.settings import ALIASES, declared_flag, say_flags, shared_option
from flowtrace.errors import FlowtraceError, OptionError
from flowtrace.outputs import OutputWarning
from flowtrace.pipeline.options import settings

app = typer.Typer(
    help="Map how information flows inside video LLMs (attention knockout, logit lens, …).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Every message holds user text (paths, names, questions, reasons): markup, emoji codes and
# highlighting are off, so `[/]` in a path prints as itself instead of crashing and `[bold]` is
# not swallowed. Styles are given as rich.text.Text, never as markup in a string.
console = Console(stderr=True, markup=False, emoji=False, highlight=False)

Device = shared_option("device")
RandomWeights = shared_option("random_weights")
Overwrite = shared_option("overwrite")
StoreArgument = Annotated[Path, typer.Argument(help="A store written by `flowtrace run`.")]


def fail(err: Exception, code: int = 2) -> NoReturn:
    """Print `err` as one line, in flags (exit `code`, 2: bad input)."""
    console.print(Text.assemble(("error:", "bold red"), " ", as_flags(err)), soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """One `warning:` line (an output that went elsewhere, a figure not drawn)."""
    text = say_flags(message, flag_of)
    console.print(Text.assemble(("warning:", "bold yellow"), " ", text), soft_wrap=True)


@contextlib.contextmanager
def output_warnings() -> Iterator[None]:
    """Print the OutputWarnings raised inside as `warning:` lines, also where warnings are being
    recorded (pytest); others are passed on as they came."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OutputWarning)
        try:
            yield
        finally:
            mine = [w for w in caught if issubclass(w.category, OutputWarning)]
            others = [w for w in caught if w not in mine]
    for w in mine:
        warn(str(w.message))
    for w in others:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # flowtrace's own output warnings as one line; every other warning as Python shows it.
    if issubclass(category, OutputWarning):
        warn(str(message))
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning
warnings.showwarning = _show_warning


def as_flags(err: Exception) -> str:
    """The library names settings (`frames: -3: …`, `data=x: …`, `use device=cpu`, `the out
    setting`); say them as the flags. An OptionError's setting leads its message."""
    text = str(err)
    if isinstance(err, OptionError):  # "window: 0: must be …" -> "--window 0: must be …"
        flag = flag_of(err.option)
        detail = text[len(err.option) :].removeprefix(": ")
        if flag and is_switch(err.option):  # "remote: no key" -> "--remote: no key"
            text = f"{flag}: {detail}"
        elif flag:
            text = f"{flag} {detail}"
    return say_flags(text, flag_of)


def is_switch(name: str) -> bool:
    """Whether a setting's flag takes no value (--remote, --compile/--no-compile)."""
    return any(s.name == name and s.type in (bool, bool | None) for s in settings())


def flag_of(name: str) -> str | None:
    """The flag of a setting or parameter by its library name, over every command."""
    flags = option_flags()
    # A library's list parameter is a repeated option: labels -> --label.
    return (
        declared_flag(name)
        or flags.get(ALIASES.get(name, name))
        or flags.get(name[:-1] if name.endswith("s") else "")
    )


@functools.cache
def option_flags() -> dict[str, str]:
    """Parameter name -> its flag, over every command (one name means one flag throughout)."""
    flags: dict[str, str] = {}
    groups = [typer.main.get_command(app)]
    while groups:
        group = groups.pop()
        for command in getattr(group, "commands", {}).values():
            groups.append(command)
            for param in command.params:
                if param.param_type_name == "option":
                    flags.setdefault(param.name, max(param.opts, key=len))
    return flags


def open_store(path: Path):
    """The store's cube, or the reason it cannot be read as one line (exit 2)."""
    from flowtrace.store import open_cube

    try:
        return open_cube(path)
    except FlowtraceError as err:
        fail(err)
