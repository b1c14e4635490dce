"""What every command shares: the app, the console, one-line errors said as flags, and the
options several commands take."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from flowtrace.errors import FlowtraceError, OptionError

app = typer.Typer(
    help="Map how information flows inside video LLMs (attention knockout, logit lens, …).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

# Library parameters whose flag has another name: the fields of flowtrace.engine.masks.Sweep.
ALIASES = {"style": "window_style", "layers": "sweep"}

Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
StoreArgument = Annotated[Path, typer.Argument(help="A store written by `flowtrace run`.")]


def fail(err: Exception, code: int = 2) -> NoReturn:
    """Print `err` as one line, in flags (exit `code`, 2: bad input)."""
    console.print(f"[bold red]error:[/] {as_flags(err)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def as_flags(err: Exception) -> str:
    """The library names parameters (`frames: -3: …`, `data=x …`); say them as the flags."""
    text = str(err)
    params = option_flags()
    if isinstance(err, OptionError):  # "window: 0: must be …" -> "--window 0: must be …"
        name, rest = err.option, " " + text[len(err.option) :].removeprefix(": ")
    else:
        match = re.match(r"^([a-z_]+)=", text)
        if not match:
            return text
        name, rest = match[1], " " + text[match.end() :]
    name = ALIASES.get(name, name)
    flag = params.get(name) or params.get(name.removesuffix("s"))  # tasks -> --task
    return flag + rest if flag else text


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
