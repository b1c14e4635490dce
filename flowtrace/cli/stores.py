"""`flowtrace show`, `check` and `plot`: read a store alone, without the model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowtrace.cli.common import StoreArgument, console, fail, open_store
from flowtrace.errors import FlowtraceError, StoreError


def show(
    store: StoreArgument,
) -> None:
    """What a store holds: provenance, samples done/failed, dims, and the summary table."""
    from flowtrace.summary import describe

    print("\n".join(describe(open_store(store))))


def check(
    store: StoreArgument,
) -> None:
    """Verify every chunk of a store against its checksum (exit 1: damaged, 2: unreadable)."""
    from flowtrace.store import check_store, chunk_count, open_cube

    try:
        problems = check_store(store)
        ds = open_cube(store) if not problems else None
    except StoreError as err:
        fail(err)
        return
    except FlowtraceError as err:
        fail(err, 1)
        return
    if problems:
        for problem in problems:
            console.print(f"damaged: {problem}", highlight=False, soft_wrap=True)
        many = "s" if len(problems) > 1 else ""
        console.print(f"{len(problems)} problem{many} in {store}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    print(f"ok: {ds.sizes.get('sample', 0)} samples, {chunk_count(store)} chunks verified")


def plot(
    stores: Annotated[
        list[Path], typer.Argument(help="A store, or several knockout stores to compare.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Figure path without suffix (default: next to the store).")
    ] = None,
) -> None:
    """Redraw a store's figure (HTML + PNG) from the store alone, no model needed; with several
    knockout stores, their layer curves side by side."""
    from flowtrace.plots import chart_for, compare_chart, save_chart

    if len(stores) == 1:
        chart = chart_for(open_store(stores[0]))
    else:
        try:
            chart = compare_chart({p.stem: open_store(p) for p in stores})
        except ValueError as err:
            fail(FlowtraceError(str(err)))
            return
    for path in save_chart(chart, out or stores[0].with_suffix("")):
        print(path)
