"""`flowtrace show`, `check` and `plot`: read a store alone, without the model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowtrace.cli.common import StoreArgument, console, fail, open_store, output_warnings
from flowtrace.errors import FlowtraceError, StoreError


def show(
    store: StoreArgument,
) -> None:
    """What a store holds: provenance, samples done/failed, dims, and the summary table."""
    from flowtrace.reading.summary import describe

    print("\n".join(describe(open_store(store))))


def check(
    store: StoreArgument,
) -> None:
    """Verify a store's metadata and every chunk against its checksums (exit 1: damaged,
    2: not a store or no sample yet, 3: written before checksums, so it cannot be verified)."""
    from flowtrace.store import check_store, chunk_count, open_cube, unverified

    try:
        problems = check_store(store)
        gap = None if problems else unverified(store)
        ds = None if problems else open_cube(store, load=False)
    except StoreError as err:
        fail(err)
        return
    except FlowtraceError as err:
        fail(err, 1)
        return
    if problems:
        for problem in problems:
            console.print(f"damaged: {problem}", highlight=False, soft_wrap=True, markup=False)
        many = "s" if len(problems) > 1 else ""
        console.print(
            f"{len(problems)} problem{many} in {store}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        raise typer.Exit(1)
    if gap:
        console.print(f"unverified: {gap}", highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(3)
    print(f"ok: {ds.sizes.get('sample', 0)} samples, {chunk_count(store)} chunks verified")


def plot(
    stores: Annotated[
        list[Path], typer.Argument(help="A store, or several knockout stores to compare.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Figure path without suffix (default: beside the store, named as it less .zarr)."
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            help="A store's name in the figure (repeat, one per store; default: its path from "
            "the stores' common folder, less .zarr)."
        ),
    ] = None,
    var: Annotated[
        str | None,
        typer.Option(
            help="The curves' variable (knockout figures: default rel_change_pred, the relative "
            "change of p(clean answer); e.g. rel_change_true, prob_true)."
        ),
    ] = None,
    sel: Annotated[
        str | None,
        typer.Option(help="DIM=VALUE[|VALUE…],…: only these, e.g. task=Object Count or layer=0|1."),
    ] = None,
    y_range: Annotated[
        str | None,
        typer.Option(help="LOW,HIGH: one y range for every panel and store, e.g. -100,20."),
    ] = None,
    by_task: Annotated[bool, typer.Option("--by-task", help="One row of panels per task.")] = False,
    combined: Annotated[
        bool,
        typer.Option(
            "--combined",
            help="One panel per store (a pass's sweeps, e.g. recipes/paper.py's four) on one y "
            "scale, instead of one panel per blocked edge.",
        ),
    ] = False,
) -> None:
    """Redraw a store's figure (HTML + PNG) from the store alone, no model needed; with several
    knockout stores, their layer curves side by side, each store labelled by its path (two
    stores under one label are refused). A file flowtrace did not write for this
    store is never replaced."""
    from flowtrace.plots import save_chart, save_store_figure
    from flowtrace.plots.scales import parse_y_range
    from flowtrace.plots.stores import stores_chart
    from flowtrace.reading.query import parse_selection

    try:
        chart = stores_chart(
            stores,
            label,
            var,
            parse_selection(sel),
            parse_y_range(y_range),
            by_task,
            combined,
        )
        if out is None and len(stores) == 1:
            with output_warnings():  # the figure went to another name: say where and why
                paths = save_store_figure(chart, stores[0])
        else:
            # A name the user gave: replaced only where flowtrace drew these stores there.
            owner = "the store" + ("s " if len(stores) > 1 else " ")
            owner += ", ".join(p.name for p in stores)
            paths = save_chart(chart, out or compared_stem(stores), owner=owner)
    except FlowtraceError as err:
        fail(err)
        return
    for path in paths:
        print(path)


def compared_stem(stores: list[Path]) -> Path:
    """Where a figure of several stores goes unless told: their common folder, named after them
    (`compare_a-vs-b`), never a name one store's own figure takes."""
    import os

    from flowtrace.paths import store_stem

    stems = [store_stem(p) for p in stores]
    name = "-vs-".join(stems[:3]) + (f"-and-{len(stems) - 3}-more" if len(stems) > 3 else "")
    folder = Path(os.path.commonpath([p.resolve().parent for p in stores]))
    return folder / f"compare_{name}"
