"""`flowtrace report`: a viewer of stores people can open offline, mail or host.

`write_report` writes one self-contained HTML page (the Vega runtime bundled by vl-convert,
every figure's data, frame thumbnails): per store its provenance, its figure and a sample
browser, and two stores side by side. `write_site` writes a folder for a full benchmark: a
gallery, one page per store with its data in a file of its own (downsampled), side-by-side pages
per recipe, the runtime once. The size budgets are in docs/report.md.
"""

from __future__ import annotations

from flowtrace.report.page import (
    PAGE_BUDGET,
    SINGLE_SAMPLES,
    SITE_PAGE_BUDGET,
    SITE_SAMPLES,
    Entry,
    collect_stores,
    write_report,
)
from flowtrace.report.site import write_site

__all__ = [
    "PAGE_BUDGET",
    "SINGLE_SAMPLES",
    "SITE_PAGE_BUDGET",
    "SITE_SAMPLES",
    "Entry",
    "collect_stores",
    "write_report",
    "write_site",
]
