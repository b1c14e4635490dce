"""`flowtrace toy`: train the embedded toy VideoLLM, regenerate its reference results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowtrace.cli.common import console, fail
from flowtrace.errors import FlowtraceError


def toy_train(
    out: Annotated[Path, typer.Option(help="Where to write the model and the held-out split.")] = (
        Path("flowtrace/toy/embedded")
    ),
    seed: Annotated[int, typer.Option(help="Seed for data, init and batches.")] = 0,
    steps: Annotated[int, typer.Option(help="Optimizer steps (0: the default).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Fresh clips per step (0: the default, 32).")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda (the same recipe, minutes faster).")] = (
        "cpu"
    ),
    plant: Annotated[
        bool,
        typer.Option(
            help="Train under fixed attention routes (the planted ground-truth model, written "
            "to OUT/planted; see README)."
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes drawing clips ahead of the optimizer (0: none). On a GPU the clips "
            "bound the speed; the batches are the same."
        ),
    ] = 0,
    last_frame_loss: Annotated[
        float,
        typer.Option(
            help="With --plant: weight of a second loss on the answer read off the last frame "
            "after the last layer where frames may interact (speeds up learning the routes)."
        ),
    ] = 0.0,
    control_cut: Annotated[
        float,
        typer.Option(
            help="With --plant: share of the single-frame control clips (Object Color) trained "
            "with cross-frame attention cut wherever the plant leaves it open."
        ),
    ] = 0.0,
    lr: Annotated[float, typer.Option(help="Peak learning rate (0: the default, 1e-3).")] = 0.0,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from this trained toy checkpoint (weights, tokenizer, processor) "
            "instead of random weights, e.g. flowtrace/toy/embedded/model with --plant."
        ),
    ] = None,
) -> None:
    """Train the embedded toy VideoLLM (see README for time and accuracy)."""
    from flowtrace.toy.train import TrainConfig, train

    if init is not None and not (init / "config.json").is_file():
        fail(FlowtraceError(f"--init {init}: no config.json there; give a toy checkpoint folder"))
    config = TrainConfig(
        seed=seed,
        device=device,
        plant=plant,
        workers=workers,
        init=str(init) if init else None,
        last_frame_loss=last_frame_loss,
        control_cut=control_cut,
    )
    if lr:
        config.lr = lr
    if steps:
        config.steps = steps
    if batch_size:
        config.batch_size = batch_size
    try:
        train(out, config, log=lambda line: console.print(line, highlight=False))
    except FlowtraceError as err:
        fail(err)


def toy_results(
    out: Annotated[Path, typer.Option(help="Folder to write (the committed one: results).")] = (
        Path("results")
    ),
    model: Annotated[
        list[str] | None, typer.Option(help="toy and/or planted (repeat); default both.")
    ] = None,
    recipe: Annotated[
        list[str] | None, typer.Option(help="Shipped recipe names (repeat); default all.")
    ] = None,
    figures_only: Annotated[
        bool,
        typer.Option(
            "--figures-only",
            help="Draw the figures, the pathway curves and the index again from the stores "
            "already there, running nothing (after a change to the figures alone).",
        ),
    ] = False,
) -> None:
    """Regenerate the reference results: every shipped recipe on the embedded models."""
    from flowtrace.toy.results import MODELS, SAMPLES, redraw, regenerate

    unknown = sorted(set(model or ()) - set(MODELS)) + sorted(set(recipe or ()) - set(SAMPLES))
    if unknown:
        fail(
            FlowtraceError(
                f"unknown {', '.join(unknown)}: models are {', '.join(MODELS)}, recipes "
                f"{', '.join(SAMPLES)}"
            )
        )

    def log(line: str) -> None:
        console.print(line, highlight=False)

    try:
        if figures_only:
            redraw(out, tuple(model or MODELS), tuple(recipe) if recipe else None, log=log)
            return
        regenerate(
            out,
            tuple(model or MODELS),
            tuple(recipe or SAMPLES),
            log=log,
        )
    except FlowtraceError as err:
        fail(err)
