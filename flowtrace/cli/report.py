"""`flowtrace report`: an offline viewer of stores (one page or a --site folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowtrace.cli.common import fail
from flowtrace.errors import FlowtraceError


def report(
    stores: Annotated[
        list[Path],
        typer.Argument(help="Stores written by `flowtrace run`, or folders holding them."),
    ],
    out: Annotated[Path, typer.Option(help="The HTML page to write.")] = Path("report.html"),
    title: Annotated[str, typer.Option(help="The page's title.")] = "flowtrace report",
    site: Annotated[
        Path | None,
        typer.Option(
            help="Write a folder site instead (gallery, a page per store, side-by-side pages, "
            "data split and downsampled): for a full benchmark."
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=1, help="Samples per store in its sample browser (default 64; 200 with --site)."
        ),
    ] = None,
) -> None:
    """A viewer of stores that works offline: per store its provenance, figure and sample
    browser, two stores side by side; one HTML page (at most 5 MB) or a --site folder."""
    from flowtrace.report import (
        SINGLE_SAMPLES,
        SITE_SAMPLES,
        collect_stores,
        write_report,
        write_site,
    )

    try:
        collect_stores(stores)  # a bad path fails here with one line, before any work
        if site is not None:
            print(write_site(stores, site, title, samples=samples or SITE_SAMPLES))
        else:
            print(write_report(stores, out, title, samples=samples or SINGLE_SAMPLES))
    except FlowtraceError as err:
        fail(err)
