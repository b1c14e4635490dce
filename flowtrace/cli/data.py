"""`flowtrace data`: generate the synthetic video QA set, list a dataset's tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowtrace.cli.common import fail
from flowtrace.errors import FlowtraceError


def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to write (json/ and video/ inside).")],
    n_per_task: Annotated[int, typer.Option(help="Samples per task.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same data.")] = 0,
    task: Annotated[list[str] | None, typer.Option(help="Only these tasks (repeat).")] = None,
    shuffle: Annotated[
        bool,
        typer.Option(
            help="Candidates in random order (the embedded toy was trained on the fixed order)."
        ),
    ] = False,
) -> None:
    """Generate the synthetic TVBench-style video QA set (real mp4 files)."""
    from flowtrace.data import synth

    try:
        synth.generate(out, n_per_task=n_per_task, seed=seed, tasks=task or None, shuffle=shuffle)
    except (FlowtraceError, ValueError) as err:
        fail(err)
    print(out)


def data_ls(
    data: Annotated[str, typer.Argument(help="'toy', KIND:PATH, a folder or a data.toml name.")],
) -> None:
    """List a dataset's tasks: index (for --task), name and sample count."""
    from flowtrace.data import task_counts
    from flowtrace.runner import resolve_data

    try:
        counts = task_counts(resolve_data(data))
    except (FlowtraceError, ValueError) as err:
        fail(err)
        return
    for i, (name, count) in enumerate(counts.items()):
        print(f"{i}\t{name}\t{count}")
