"""Ctrl-C during `flowtrace run`: what the stores kept, and the command that carries on."""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import typer

from flowtrace.cli.common import console

if TYPE_CHECKING:
    from flowtrace.pipeline.outputs import Outputs


def interrupted(ctx: typer.Context, files: dict[str, str], outputs: Outputs | None) -> NoReturn:
    """Ctrl-C: say what the stores keep and the command that carries on from there; exit 130.
    `files`: each recipe's name and file (a pass file's members resume one by one); `outputs`:
    the run's stores as settled before it started (None: interrupted before that)."""
    _wait_on_ctrl_c()  # the Ctrl-C may have come from code, not through our handler
    settled = outputs.stores if outputs is not None else {}
    stores = {name: store for name, store in settled.items() if store.exists()}
    given = outputs is not None and outputs.given
    for name, store in stores.items():
        kept = _kept(store)
        console.print(
            f"interrupted: {kept} sample{'' if kept == 1 else 's'} of {name} kept in {store}",
            highlight=False,
            soft_wrap=True,
        )
    if not stores:
        console.print("interrupted before any store was written", highlight=False)
    if given or len(stores) <= 1:
        store = next(iter(stores.values()), None) if not given else None
        console.print(
            f"resume with: {_command_line(ctx, out=store)}", highlight=False, soft_wrap=True
        )
    else:  # several recipes in default stores: each resumes on its own
        for name, store in stores.items():
            command = _command_line(ctx, out=store, recipes=[files[name]])
            console.print(f"resume {name} with: {command}", highlight=False, soft_wrap=True)
    raise typer.Exit(130)


@contextlib.contextmanager
def later_ctrl_c_waits() -> Iterator[None]:
    """The first Ctrl-C stops the run (KeyboardInterrupt) as usual; later ones, pressed while
    the stores save the samples analysed and the resume command is printed, are only told to
    wait, so a quick second press cuts neither short. Ctrl-\\ still quits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def first(signum: int, frame: FrameType | None) -> None:
        _wait_on_ctrl_c()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_on_ctrl_c() -> None:
    """From now on Ctrl-C says once that the save and the resume command are coming."""
    if threading.current_thread() is not threading.main_thread():
        return
    told = []

    def later(signum: int, frame: FrameType | None) -> None:
        if not told:  # plain write: a handler may run inside one of rich's prints
            told.append(True)
            sys.stderr.write(
                "\nsaving the samples analysed; the resume command follows (Ctrl-\\ quits now)\n"
            )

    signal.signal(signal.SIGINT, later)


def _kept(store: Path) -> int:
    from flowtrace.store import open_cube

    try:
        return int(open_cube(store).sizes.get("sample", 0))
    except Exception:  # a store killed before its first sample holds none
        return 0


def _command_line(
    ctx: typer.Context, out: Path | None = None, recipes: list[str] | None = None
) -> str:
    """This command as typed (the options given on the command line), without --overwrite, and
    with `out` when the store was a default one."""
    words = ["flowtrace", ctx.info_name or "run"]
    for param in ctx.command.params:
        name, value = param.name, ctx.params.get(param.name)
        if param.param_type_name == "argument":
            values = recipes if name == "recipes" and recipes else value
            words += [str(v) for v in (values if isinstance(values, list | tuple) else [values])]
            continue
        if name == "out" and out is not None:
            value = out
        elif name == "overwrite" or getattr(ctx.get_parameter_source(name), "name", "") != (
            "COMMANDLINE"
        ):
            continue
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            words.append(flag if value else max(param.secondary_opts, key=len))
        elif isinstance(value, list | tuple):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)
