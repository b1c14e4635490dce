"""The `flowtrace` command line: one module per command or family, registered here on the app.

Each module holds its command's options and body (heavy imports inside the command, so
`flowtrace --help` stays quick); `common` holds the app, the console, the one-line errors said as
flags and the options several commands share.
"""

from __future__ import annotations

import sys

import typer

from flowtrace.cli import data, models, pathways, query, report, run, stores, toy
from flowtrace.cli.common import app, console

__all__ = ["app", "console", "main"]

data_app = typer.Typer(help="Datasets: generate the synthetic video QA set, list tasks.")
toy_app = typer.Typer(help="The embedded toy VideoLLM: train it again from its seed.")
app.add_typer(data_app, name="data")
app.add_typer(toy_app, name="toy")

# In the order `flowtrace --help` lists them.
app.command("run")(run.run)
app.command("show")(stores.show)
app.command("check")(stores.check)
app.command("plot")(stores.plot)
app.command("pathways")(pathways.pathways)
app.command("report")(report.report)
app.command("query")(query.query_command)
app.command("models")(models.models)
data_app.command("synth")(data.data_synth)
data_app.command("ls")(data.data_ls)
toy_app.command("train")(toy.toy_train)
toy_app.command("results")(toy.toy_results)


def main() -> None:  # pragma: no cover - console entry for `python -m flowtrace`
    sys.exit(app())
