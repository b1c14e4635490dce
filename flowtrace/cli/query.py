"""`flowtrace query`: select, average and export cubes as a table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flowtrace.cli.common import fail
from flowtrace.errors import FlowtraceError


def query_command(
    stores: Annotated[
        list[Path], typer.Argument(help="One or more stores (a `run` column joins them).")
    ],
    sel: Annotated[
        str | None,
        typer.Option(
            help="DIM=VALUE[|VALUE…],…  e.g. source=video,target=last; a per-sample coordinate "
            "selects samples, e.g. task=Object Count"
        ),
    ] = None,
    mean: Annotated[list[str] | None, typer.Option(help="Average over this dim (repeat).")] = None,
    var: Annotated[list[str] | None, typer.Option(help="Only these variables (repeat).")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV (the default).")] = False,
    json_: Annotated[bool, typer.Option("--json", help="JSON records.")] = False,
    parquet: Annotated[bool, typer.Option("--parquet", help="Parquet (needs --out).")] = False,
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            help="A store's `run` value (repeat, one per store; default: its path from the "
            "stores' common folder, less .zarr)."
        ),
    ] = None,
    all_samples: Annotated[
        bool, typer.Option(help="Keep skipped and failed samples too (NaN where not measured).")
    ] = False,
) -> None:
    """Select, average and export a cube (or several, side by side) as a table."""
    from flowtrace.reading.query import parse_selection, query, write_table

    chosen = [name for name, on in (("csv", csv), ("json", json_), ("parquet", parquet)) if on]
    if len(chosen) > 1:
        fail(FlowtraceError(f"--{' --'.join(chosen)}: choose one output format"))
    fmt = chosen[0] if chosen else "csv"
    try:
        table = query(stores, parse_selection(sel), mean or [], var, not all_samples, label)
        text = write_table(table, fmt, out)
    except FlowtraceError as err:
        fail(err)
        return
    if text is not None:
        sys.stdout.write(text)
