"""What a store holds, as text: provenance, sample counts, dims, and the paper's summary table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from flowtrace.paths import shown
from flowtrace.store import analysed, analysed_mask, keys
from flowtrace.tokens.edge_share import pooled

PROVENANCE = (
    "recipe", "recipe_kind", "model", "model_revision", "adapter", "lora", "dtype", "attn", "data",
    "data_kind", "split", "ratio", "frames", "pooling", "window", "window_style", "sample_mode",
    "engine", "heads", "generate", "executor", "traces", "seed", "device", "flowtrace_version",
    "git_commit", "created",
)  # fmt: skip


# Settings only some kinds read. A run records them on every store (the run's defaults), but on
# another kind's store they say nothing of its numbers, so `show` leaves them out there. A kind
# not named here (one a user registered) shows them all: flowtrace cannot tell what it reads.
SWEEP_SETTINGS = ("window", "window_style", "heads")  # a knockout sweep's window and heads
NOT_READ = {
    "Knockout": (),
    "FlowMap": ("generate",),  # replies are a Knockout recipe's; a flow map scores the first token
    **dict.fromkeys(
        ("EffectivePathway", "LayerProbe", "VideoLogitLens", "AttentionMap", "TraceProgram"),
        (*SWEEP_SETTINGS, "generate"),
    ),
}


def settings(ds: xr.Dataset) -> list[str]:
    """The provenance that applies to the store's kind, one `key: value` line each."""
    skip = NOT_READ.get(str(ds.attrs.get(keys.RECIPE_KIND, "")), ())
    return [f"{key}: {ds.attrs[key]}" for key in PROVENANCE if key in ds.attrs and key not in skip]


def counted(ds: xr.Dataset) -> xr.Dataset:
    """The samples every accuracy is over: analysed and skipped ones (failed ones have none)."""
    return ds.isel(sample=ds["status"].values != "failed")


def clean_accuracy(ds: xr.Dataset) -> float:
    """Clean accuracy in % over every counted sample (NaN when there is none)."""
    correct = counted(ds)["clean_correct"].values.astype(float)
    return 100 * float(correct.mean()) if correct.size else float("nan")


def accuracy_after(ds: xr.Dataset, measure: str | None = "rel_change_pred") -> xr.DataArray:
    """Accuracy in % after the intervention, per cell of `correct`, over every counted sample.

    The reference code's definition in every `--sample-mode`: the analysed samples answered
    right under the intervention, over every counted sample (its `cnt_samples`, the clean
    line's denominator); a sample skipped by --sample-mode is never run under the
    intervention and counts as 0, as there. An analysed sample whose cell `measure` is NaN (a
    pair it lacks, say an option it has not) drops out of that cell.
    """
    ds = counted(ds)
    correct = ds["correct"].astype(float)
    if measure is not None and measure in ds:
        correct = correct.where(ds[measure].notnull())
    value = xr.where(analysed_mask(ds), correct, 0.0)
    return 100 * value.mean("sample", skipna=True)


def edge_shares(ds: xr.Dataset) -> dict[str, tuple[float, float]]:
    """Per condition of an effective-pathway store: % of edges kept over the analysed samples,
    by flowtrace's count and by the paper's (flowtrace.tokens.edge_share; NaN in a store written
    before the paper's was recorded)."""
    ok = analysed(ds)
    out = {}
    for condition in map(str, ok["condition"].values):
        at = ok.sel(condition=condition)
        ours = float(at["edges_kept_pct"].mean()) if at.sizes["sample"] else float("nan")
        paper = (
            pooled(at["paper_kept_pct"].values, at["attention_pairs"].values)
            if "paper_kept_pct" in at
            else float("nan")
        )
        out[condition] = (ours, paper)
    return out


def describe(ds: xr.Dataset) -> list[str]:
    """What `flowtrace show` prints and a report's provenance block holds; paths in it (a failed
    sample's video, an older store's model) name the data root as the run did and the home
    folder as `~`."""
    lines = settings(ds)
    status = [str(s) for s in ds["status"].values]
    counts = {name: status.count(name) for name in ("ok", "skipped", "failed")}
    lines.append("samples: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    reasons = sorted(
        {str(r) for r, s in zip(ds["reason"].values, status, strict=True) if s == "failed"}
    )
    lines += [f"  failed: {r}" for r in reasons[:5]]
    lines.append("dims: " + ", ".join(f"{d}={n}" for d, n in ds.sizes.items()))
    lines.append("variables: " + ", ".join(sorted(ds.data_vars)))
    answered = counted(ds).sizes["sample"]
    if answered:
        lines.append(f"clean accuracy: {clean_accuracy(ds):.1f}% of {answered}")
    if "rel_change_pred" in ds and "source" in ds.dims:
        lines += ["", *knockout_table(ds)]
    if "edges_kept_pct" in ds and "condition" in ds.dims:
        lines += ["", *pathway_table(ds)]
    lines += ["", *value_table(ds)]
    if "clean_text" in ds:
        lines += ["", *reply_examples(ds)]
    root, named = _data_root(ds)
    return [shown(line, root, named) for line in lines]


def _data_root(ds: xr.Dataset) -> tuple[Path | None, str | None]:
    """The run's data root on this machine, and as the store names it."""
    from flowtrace.data.sources import video_file

    named = ds.attrs.get(keys.DATA_ROOT)
    if not named:
        return None, None
    return video_file(ds.attrs, ""), str(named)


def reply_examples(ds: xr.Dataset, samples: int = 3) -> list[str]:
    """A few greedy replies, clean and under each edge's knockout at its worst layer."""
    ok = analysed(ds)
    change = ok["rel_change_pred"].mean("sample")
    lines = ["greedy replies (clean, then with the edge cut at its worst layer):"]
    for index in range(min(samples, ok.sizes["sample"])):
        at = ok.isel(sample=index)
        lines.append(f"{at['sample'].item()}  clean: {at['clean_text'].item()!r}")
        for source in ok["source"].values:
            for target in ok["target"].values:
                curve = change.sel(source=source, target=target)
                if bool(curve.isnull().all()) or "head" in curve.dims:
                    continue
                layer = int(curve["layer"].values[int(np.nanargmin(curve.values))])
                text = at["new_text"].sel(source=source, target=target, layer=layer).item()
                lines.append(f"    {source} -/-> {target} @ {layer}: {text!r}")
    return lines


def knockout_table(ds: xr.Dataset) -> list[str]:
    """Mean relative change of p(answer) per edge over the early / middle / late thirds of the
    layers (the paper's summary), with the layer of the deepest drop and the accuracy there (over
    every counted sample, skipped ones as wrong: see `accuracy_after`)."""
    ok = analysed(ds)
    after = accuracy_after(ds)
    layers = ok["layer"].values
    thirds = np.array_split(layers, 3)
    header = f"{'edge':<34}{'early':>9}{'middle':>9}{'late':>9}{'worst layer':>13}{'acc there':>11}"
    lines = [
        "relative change of p(answer), % (mean over analysed samples); accuracy over all "
        f"{counted(ds).sizes['sample']} counted samples:",
        header,
    ]
    for source in ok["source"].values:
        for target in ok["target"].values:
            change = ok["rel_change_pred"].sel(source=source, target=target)
            if bool(change.isnull().all()):
                continue
            mean = change.mean("sample")
            # A per-head sweep: thirds over the mean of the heads; worst as (layer, head).
            per_layer = mean.mean("head") if "head" in mean.dims else mean
            # xarray's mean: NaN for a third with nothing measured, without numpy's warning.
            parts = [float(per_layer.sel(layer=part).mean()) for part in thirds]
            cell = np.unravel_index(int(np.nanargmin(mean.values)), mean.shape)
            where = {dim: int(mean[dim].values[i]) for dim, i in zip(mean.dims, cell, strict=True)}
            accuracy = float(after.sel(source=source, target=target, **where))
            worst = "/".join(f"{'h' if dim == 'head' else ''}{v}" for dim, v in where.items())
            edge = f"{source} -/-> {target}"
            lines.append(
                f"{edge:<34}{parts[0]:>9.1f}{parts[1]:>9.1f}{parts[2]:>9.1f}{worst:>13}{accuracy:>10.1f}%"
            )
    return lines


def pathway_table(ds: xr.Dataset) -> list[str]:
    """Per condition of an effective-pathway store: accuracy (over every counted sample), the
    mean relative change of p(answer), and the share of edges kept by both counts."""
    ok = analysed(ds)
    after = accuracy_after(ds)
    shares = edge_shares(ds)
    lines = [
        f"effective pathway: accuracy over all {counted(ds).sizes['sample']} counted samples; "
        "change and edges kept over analysed samples:",
        f"{'kept':<12}{'accuracy':>10}{'change %':>10}{'edges kept %':>14}{'paper kept %':>14}",
    ]
    for condition in map(str, ds["condition"].values):
        change = float(ok["rel_change_pred"].sel(condition=condition).mean())
        ours, paper = shares[condition]
        accuracy = float(after.sel(condition=condition))
        lines.append(f"{condition:<12}{accuracy:>9.1f}%{change:>10.1f}{ours:>14.1f}{paper:>14.1f}")
    return lines


# Text arrays larger than this are not scanned for their distinct values (a 7B logit lens holds
# hundreds of millions of top tokens; `show` stays quick).
DISTINCT_LIMIT = 1_000_000


def value_table(ds: xr.Dataset) -> list[str]:
    """Per variable: its dims past `sample`, and mean / min / max over the analysed samples, with
    the share of cells that hold no value (NaN: a cell the sample lacks). A yes/no variable's mean
    is its share of yes; a text variable shows how many distinct values it holds."""
    if "sample" in ds.dims and "status" in ds.coords:
        ds = analysed(ds)
        if not ds.sizes["sample"]:
            return ["values: no analysed sample"]
        over = f"{ds.sizes['sample']} analysed samples"
    else:
        over = "the store"
    names = sorted(ds.data_vars)
    numeric = [n for n in names if ds[n].dtype.kind in "biuf" and ds[n].size]
    stats = {}
    for i, name in enumerate(numeric):
        var = ds[name].astype(float) if ds[name].dtype.kind == "b" else ds[name]
        stats |= {
            f"{i}mean": var.mean(),
            f"{i}min": var.min(),
            f"{i}max": var.max(),
            f"{i}nan": var.isnull().mean(),
        }
    # One computation for every statistic: a lazily opened store is read once.
    values = {key: float(v) for key, v in xr.Dataset(stats).compute().data_vars.items()}
    dims = {n: ",".join(str(d) for d in ds[n].dims if d != "sample") or "-" for n in names}
    name_width = max(map(len, [*names, "variable"])) + 2
    dims_width = max(map(len, [*dims.values(), "dims"])) + 2
    lines = [
        f"values over {over} (mean, min, max; missing: share of cells without a value):",
        f"{'variable':<{name_width}}{'dims':<{dims_width}}{'mean':>11}{'min':>11}{'max':>11}"
        f"{'missing':>9}",
    ]
    for name in names:
        head = f"{name:<{name_width}}{dims[name]:<{dims_width}}"
        if name in numeric:
            i = numeric.index(name)
            cells = "".join(f"{_number(values[f'{i}{s}']):>11}" for s in ("mean", "min", "max"))
            lines.append(f"{head}{cells}{100 * values[f'{i}nan']:>8.0f}%")
        elif not ds[name].size:
            lines.append(f"{head}{'empty':>11}")
        elif ds[name].dtype.kind in "OUT" and ds[name].size <= DISTINCT_LIMIT:
            distinct = len(set(map(str, np.asarray(ds[name].values).ravel())))
            lines.append(f"{head}  text, {distinct} distinct")
        else:
            lines.append(f"{head}  {'text' if ds[name].dtype.kind in 'OUT' else ds[name].dtype}")
    return lines


def _number(x: float) -> str:
    return "nan" if np.isnan(x) else f"{x:.4g}"
