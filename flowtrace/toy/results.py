"""The committed reference results: every shipped recipe on the embedded models.

`flowtrace toy results` runs each recipe on the default toy and on the planted toy over the
embedded held-out split and writes `results/<model>/<recipe>.zarr` with its figures, then derives
effective pathways from each flow map (`results/<model>/auto_pathway/`) and writes
`results/README.md`, an index with each store's headline. Costly recipes run on fewer samples
(SAMPLES), so the whole set stays small and takes about half an hour on two CPU cores.
`flowtrace toy results --figures-only` (`redraw`) draws the figures and the index again from the
stores, running nothing, after a change to the figures alone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from flowtrace.models import PLANTED, TOY, LoadedModel, load_model
from flowtrace.outputs import write_file
from flowtrace.paths import store_stem
from flowtrace.plots.common import figure_files, figure_stem
from flowtrace.recipe import RECIPES_DIR, load_recipe
from flowtrace.runner import RunOptions, run
from flowtrace.store import analysed, analysed_mask, compact, open_cube

MODELS = (TOY, PLANTED)
# Samples per recipe (None: the whole 64-sample held-out split), spread over the four tasks.
SAMPLES: dict[str, int | None] = {
    "cross_frame": None,
    "vql_to_ql": None,
    "question_options_to_last": None,
    "vq_to_true_option": None,
    "gen_prob": None,
    "effective_pathway": None,
    "logit_lens": 8,
    "attention_map": 8,
    "open_ended": 8,
    "flow_map": 16,
    "counterfactual_patch": 8,
    "frame_attention_mass": 8,
    "frame_mlp_ablation": 8,
    "within_frame": None,
    "language_video": None,
    "temporal_heads": 8,
    "steer_heads": 8,
}
THRESHOLDS = (0.1, 0.25, 0.5, 0.75)


def regenerate(
    out: Path = Path("results"),
    models: tuple[str, ...] = MODELS,
    recipes: tuple[str, ...] = tuple(SAMPLES),
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Run `recipes` on `models` into `out`; returns the stores written."""
    from flowtrace.plots import chart_for, save_chart

    stores = []
    for model in models:
        loaded = load_model(model, device="cpu")
        for name in recipes:
            recipe = load_recipe(RECIPES_DIR / f"{name}.py")
            store = out / model / f"{name}.zarr"
            # The attention map needs eager attention: the runner loads that model itself.
            given = None if name == "attention_map" else loaded
            # A planted model does not generate: its open-ended run keeps first-token scores.
            options = RunOptions(
                model=model,
                limit=SAMPLES.get(name),
                out=store,
                overwrite=True,
                device="cpu",
                plot=False,  # drawn below, after compacting, at scale 1
                generate=0 if model == PLANTED and getattr(recipe, "generate", 0) else None,
            )
            # results/ is flowtrace's own folder: its stores are replaced whatever they hold
            # (stores shipped before the creation marker carry none, so overwrite alone refuses).
            shutil.rmtree(store, ignore_errors=True)
            result = run(recipe, options, loaded=given)
            compact(store)  # a few dozen files instead of one per sample and variable
            # results/ is flowtrace's own folder: its figures are replaced whatever they hold.
            ds = open_cube(store)
            figures = save_chart(
                chart_for(ds),
                figure_stem(store),
                scale=1,
                replace=True,
                runtime=runtime(out, store.parent),
            )
            log(f"{store}: {result.counts['ok']} analysed, {', '.join(map(str, figures))}")
            if summary := headline(ds):
                log(f"  {summary}")
            stores.append(store)
        if "flow_map" in recipes:
            auto_pathways(out, model, loaded, log)
    # The index covers every model with results in `out`, not only the ones just rerun.
    write_file(out / "README.md", index(out, tuple(m for m in MODELS if (out / m).is_dir())))
    return stores


def auto_pathways(
    out: Path, model: str, loaded: LoadedModel | None = None, log: Callable[[str], None] = print
) -> Path:
    """Derive the effective pathways from `model`'s flow map at each threshold and run them
    (`out/model/auto_pathway/threshold_T.zarr`), with the curve of accuracy against edges kept
    (curve.csv and its figure); returns the folder."""
    from flowtrace.pathways.derive import curve_chart, pathway_curve
    from flowtrace.plots import save_chart

    folder = out / model / "auto_pathway"
    shutil.rmtree(folder, ignore_errors=True)
    options = RunOptions(model=model, out=folder, overwrite=True, device="cpu")
    flow_map = out / model / "flow_map.zarr"
    table = pathway_curve(flow_map, list(THRESHOLDS), options, loaded=loaded)
    for threshold_store in folder.glob("*.zarr"):
        compact(threshold_store)
    folder.mkdir(parents=True, exist_ok=True)
    write_file(folder / "curve.csv", table.to_csv(index=False))
    save_chart(
        curve_chart(table), folder / "curve", scale=1, replace=True, runtime=runtime(out, folder)
    )
    log(f"{folder}: curve over thresholds {', '.join(map(str, THRESHOLDS))}")
    return folder


RUNTIME = "vega.js"  # the Vega runtime every committed figure loads: one copy, not one a page


def runtime(out: Path, folder: Path) -> str:
    """The runtime's URL from a figure in `folder`, written into `out` on first use."""
    from flowtrace.plots.common import runtime_bundle

    if not (out / RUNTIME).is_file():
        write_file(out / RUNTIME, runtime_bundle())
    return os.path.relpath(out / RUNTIME, folder).replace(os.sep, "/")


def redraw(
    out: Path = Path("results"),
    models: tuple[str, ...] = MODELS,
    recipes: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Draw the committed figures again from what `out` holds, running nothing: each store's
    figure (of `recipes`, default all), each auto_pathway curve (from its curve.csv), and the
    index. For a change to the figures alone; a change to the numbers needs `regenerate`."""
    import pandas as pd

    from flowtrace.pathways.derive import curve_chart
    from flowtrace.plots import chart_for, save_chart

    drawn = []
    for model in models:
        for store in sorted((out / model).glob("*.zarr")):
            if recipes is not None and store_stem(store) not in recipes:
                continue
            chart = chart_for(open_cube(store))
            drawn += save_chart(
                chart, figure_stem(store), scale=1, replace=True, runtime=runtime(out, store.parent)
            )
            log(f"{store}: figure drawn again")
        curve = out / model / "auto_pathway" / "curve.csv"
        if curve.exists():
            table = pd.read_csv(curve)
            drawn += save_chart(
                curve_chart(table),
                curve.with_name("curve"),
                scale=1,
                replace=True,
                runtime=runtime(out, curve.parent),
            )
            log(f"{curve.parent}: curve drawn again")
    write_file(out / "README.md", index(out, tuple(m for m in MODELS if (out / m).is_dir())))
    return drawn


def headline(ds: xr.Dataset) -> str:
    """One line on what a store shows, computed from the store."""
    ok = analysed(ds)
    if "rel_change_pred" in ok and "source" in ok.dims and "head" not in ok.dims:
        change = ok["rel_change_pred"].mean("sample")
        worst = []
        for source in map(str, ok["source"].values):
            for target in map(str, ok["target"].values):
                curve = change.sel(source=source, target=target)
                if bool(curve.isnull().all()):
                    continue
                layer = int(np.nanargmin(curve.values))
                worst.append((float(curve.values[layer]), f"{source} -/-> {target}", layer))
        worst.sort()
        return "; ".join(
            f"{edge}: {value:.1f}% at layer {layer}" for value, edge, layer in worst[:3]
        )
    if "edges_kept_pct" in ok:
        from flowtrace.reading.summary import accuracy_after, edge_shares

        after = accuracy_after(ds)  # over every counted sample, as the clean line
        shares = edge_shares(ds)  # flowtrace's count and the paper's (flowtrace.tokens.edge_share)
        parts = []
        for condition in map(str, ok["condition"].values):
            accuracy = float(after.sel(condition=condition))
            ours, paper = shares[condition]
            parts.append(
                f"{condition}: {accuracy:.0f}% accuracy with {ours:.1f}% of edges "
                f"({paper:.1f}% by the paper's count)"
            )
        return "; ".join(parts)
    if "prob_true" in ok and "lens" in ok.dims:
        p_true = ok["prob_true"].sel(lens="norm").mean("sample").values
        above = np.flatnonzero(p_true > 0.5)
        first = f"layer {int(above[0])}" if above.size else "no layer"
        return f"p(true letter) passes 0.5 at {first}; {p_true[-1]:.2f} at the last layer"
    if "attention" in ok:
        mass = ok["attention"].sel(condition="clean").mean(("sample", "head"))
        frames = [s for s in mass["source"].values if str(s).startswith("frame_")]
        on_video = mass.sel(target="last", source=frames).sum("source").values
        by_layer = ", ".join(f"{float(x):.2f}" for x in on_video)
        return f"last token's attention mass on the frames, layer by layer: {by_layer}"
    if "flipped" in ok and "counterfactual" in ok.dims:
        flips = ok["flipped"].sel(counterfactual="reversed", site="residual").mean("sample")
        layer, group = np.unravel_index(int(np.argmax(flips.values)), flips.shape)
        return (
            f"frames reversed: patching {flips['group'].values[group]} at layer "
            f"{int(flips['layer'].values[layer])} flips {100 * float(flips.values.max()):.0f}% of "
            "answers (the residual stream's most-flipping cell)"
        )
    if "top_token" in ok and "frame" in ok.dims:
        top = ok["top_token"].isel(k=0, layer=-1).values.ravel()
        words, counts = np.unique([str(w).strip() for w in top], return_counts=True)
        best = words[np.argsort(-counts)[:3]]
        return f"last layer's most frequent top-1 words on video tokens: {', '.join(best)}"
    return ""


def index(out: Path, models: tuple[str, ...]) -> str:
    lines = [
        "# results/",
        "",
        "Reference results of every shipped recipe on the two embedded models, over the embedded",
        "held-out split. Regenerate them all with `flowtrace toy results` (about half an hour on",
        "two CPU cores); `flowtrace show STORE` prints any store's provenance and summary.",
        "`flowtrace run` writes its own stores under `results/RECIPE/` (not committed).",
        "",
    ]
    for model in models:
        what = "the default toy" if model == TOY else "the toy trained under planted routes"
        lines += [f"## `{model}`: {what}", "", "| recipe | samples | figure | what it shows |"]
        lines.append("|---|---|---|---|")
        for store in sorted((out / model).glob("*.zarr")):
            ds = open_cube(store)
            ok = int(analysed_mask(ds).sum())
            figure = figure_files(figure_stem(store))[1].relative_to(out)
            lines.append(f"| `{store_stem(store)}` | {ok} | [png]({figure}) | {headline(ds)} |")
        curve = out / model / "auto_pathway" / "curve.csv"
        if curve.exists():
            figure = figure_files(curve.with_name("curve"))[1].relative_to(out)
            table = curve.relative_to(out)
            lines += ["", f"Derived effective pathways: [{table}]({table}), [figure]({figure})."]
        lines.append("")
    return "\n".join(lines)
