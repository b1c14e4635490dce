"""`flowtrace pathways`: effective pathways from a flow map, against random cuts; or --find."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowtrace.cli.common import Device, Overwrite, RandomWeights, fail, open_store
from flowtrace.cli.settings import shared_option
from flowtrace.errors import FlowtraceError

# The curve's runs take the flow map's sample mode unless told otherwise: a flow map of every
# sample (a random-weights dry run, whose answers are noise) gives runs of every sample.
SampleMode = shared_option(
    "sample_mode",
    default_note="Default: the flow map's. The threshold curve's runs only: --find judges "
    "samples by p(true answer) itself.",
)


def pathways(
    flow_map: Annotated[Path, typer.Argument(help="A store of recipes/flow_map.py.")],
    thresholds: Annotated[
        str, typer.Option(help="Shares of each pathway's peak effect that keep a layer.")
    ] = "0.1,0.25,0.5,0.75",
    out: Annotated[Path, typer.Option(help="Folder for the runs and the curve.")] = Path(
        "results/auto_pathway"
    ),
    model: Annotated[str | None, typer.Option(help="Default: the flow map's model.")] = None,
    data: Annotated[str | None, typer.Option(help="Default: the flow map's data.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many samples.")] = None,
    device: Device = "auto",
    random_weights: RandomWeights = False,
    sample_mode: SampleMode = None,
    overwrite: Overwrite = False,
    noise_floor: Annotated[
        float | None,
        typer.Option(
            help="Smallest % change of p(answer) that counts (default 1e-3; raise it for bf16 "
            "stores, lower it for faint float32 effects)."
        ),
    ] = None,
    find: Annotated[
        bool,
        typer.Option(
            "--find",
            help="Search every (layer, source, target) cell for the fewest edges to keep instead "
            "(search on a quarter of the samples, choose the cut on another quarter, frontier on "
            "the held-out half); writes recipe.py to --out.",
        ),
    ] = False,
    min_ratio: Annotated[
        float,
        typer.Option(help="--find: share of each search/select sample's p(true answer) to keep."),
    ] = 0.5,
    fresh_select: Annotated[
        int,
        typer.Option(
            help="--find: choose the cut on this many fresh synthetic samples per task (a fixed "
            "seed of their own) instead of a quarter of the data; 0: the data's."
        ),
    ] = 0,
    fresh_test: Annotated[
        int,
        typer.Option(
            help="--find: measure the frontier on this many fresh synthetic samples per task "
            "(a fixed seed of their own) instead of the data's held-out half; 0: the data's."
        ),
    ] = 0,
    selection: Annotated[
        str,
        typer.Option(
            help="--find: how the select samples decide which of the search's cut cells are "
            "cut: 'repair', the search run again along its path on half of them (a cell that "
            "breaks one is kept), then the longest part of that walk the other half holds; "
            "'prefix', the longest start of the search's path they hold."
        ),
    ] = "repair",
    max_select_failures: Annotated[
        float | None,
        typer.Option(
            help="--find: share of the select samples that may fail the acceptance test "
            "(default: 0 for repair, in each half; 0.01 for prefix, 1 of 128)."
        ),
    ] = None,
    reuse_search: Annotated[
        Path | None,
        typer.Option(
            help="--find: reuse the search (cut order) of this found_pathway folder instead of "
            "searching again; it must be this model's, on the same search samples and min_ratio."
        ),
    ] = None,
) -> None:
    """Effective pathways from a flow map (a store of recipes/flow_map.py).

    By default: at each threshold, keep each pathway in the layers where its flow-map effect
    reaches that share of its peak, cut the rest, run it against random cuts of the same budget,
    and write curve.csv and a figure of accuracy against the share of edges kept. With --find:
    search the (layer, source, target) cells for the fewest edges to keep, and write the found
    pathway as recipe.py with its frontier. The procedure: docs/pathways.md."""
    from flowtrace.outputs import PATHWAYS, claims
    from flowtrace.pathways.derive import curve_chart, pathway_curve
    from flowtrace.plots import save_chart
    from flowtrace.runner import RunOptions
    from flowtrace.store import keys

    ds = open_store(flow_map)
    try:
        # The files this writes into --out: refused before the runs if they are the user's.
        check_outputs(out, FOUND_FILES if find else CURVE_FILES)
    except FlowtraceError as err:
        fail(err)
    if find and sample_mode:
        fail(
            FlowtraceError(
                f"--sample-mode {sample_mode}: --find judges samples by p(true answer) itself; "
                "drop --sample-mode, or drop --find for the threshold curve"
            )
        )
    if find:
        import tempfile

        from flowtrace.data import read_samples
        from flowtrace.models import load_model
        from flowtrace.pathways.discovery import FRESH_SEEDS, fresh_split
        from flowtrace.pathways.find_pathway import discover, load_search
        from flowtrace.pipeline.options import resolve_data

        try:
            loaded = load_model(
                model or str(ds.attrs[keys.MODEL]), device=device, weights=not random_weights
            )
            samples = read_samples(resolve_data(data or str(ds.attrs[keys.DATA])))[:limit]
            reused = load_search(reuse_search) if reuse_search else None
            with tempfile.TemporaryDirectory(prefix="flowtrace-fresh-") as root:
                chosen = {
                    name: fresh_split(name, n, Path(root)) if n else None
                    for name, n in (("select", fresh_select), ("test", fresh_test))
                }
                fresh = {
                    **{f"{k}_seed": FRESH_SEEDS[k] for k, v in chosen.items() if v},
                    **{
                        f"{k}_per_task": n
                        for k, n in (("select", fresh_select), ("test", fresh_test))
                        if n
                    },
                }
                discover(
                    loaded,
                    samples,
                    out,
                    min_ratio=min_ratio,
                    select_samples=chosen["select"],
                    test_samples=chosen["test"],
                    fresh=fresh,
                    max_select_failures=max_select_failures,
                    reuse_search=reused,
                    rule=selection,
                )
        except FlowtraceError as err:
            fail(err)
        return
    try:
        levels = [float(t) for t in thresholds.split(",")]
    except ValueError:
        fail(FlowtraceError(f"--thresholds {thresholds}: give numbers such as 0.1,0.5"))
        return
    try:
        options = RunOptions(
            model=model or str(ds.attrs[keys.MODEL]),
            data=data or str(ds.attrs[keys.DATA]),
            limit=limit,
            device=device,
            out=out,
            random_weights=random_weights,
            overwrite=overwrite,
            sample_mode=sample_mode or str(ds.attrs.get(keys.SAMPLE_MODE, "correct")),
        )
        table = pathway_curve(flow_map, levels, options, floor=noise_floor)
    except FlowtraceError as err:
        fail(err)
        return
    try:
        with claims(out) as held:
            held.write(out / "curve.csv", table.to_csv(index=False), PATHWAYS)
        figures = save_chart(curve_chart(table), out / "curve", owner=PATHWAYS)
    except FlowtraceError as err:
        fail(err)
        return
    print(table.to_string(index=False))
    for path in [out / "curve.csv", *figures]:
        print(path)


CURVE_FILES = ("curve.csv", "curve.html", "curve.png")
FOUND_FILES = ("frontier.csv", "frontier.html", "frontier.png", "recipe.py", "summary.json")


def check_outputs(out: Path, names: tuple[str, ...]) -> None:
    """Refuse an --out whose files of these names flowtrace did not write (the user's own
    recipe.py, a table edited since), before any model loads."""
    from flowtrace.outputs import PATHWAYS, claims

    if out.exists() and not out.is_dir():
        raise FlowtraceError(f"--out {out}: is a file; give a folder for the runs and the curve")
    if not out.exists():
        return
    with claims(out) as held:
        for name in names:
            held.check(out / name, PATHWAYS)
