"""What a store holds, as text: provenance, sample counts, dims, and the paper's summary table."""

from __future__ import annotations

import numpy as np
import xarray as xr

PROVENANCE = (
    "recipe", "recipe_kind", "model", "model_revision", "adapter", "lora", "dtype", "attn", "data",
    "data_kind", "split", "ratio", "frames", "pooling", "window", "window_style", "sample_mode",
    "engine", "heads", "generate", "executor", "traces", "seed", "device", "flowtrace_version",
    "git_commit", "created",
)  # fmt: skip


def describe(ds: xr.Dataset) -> list[str]:
    lines = [f"{key}: {ds.attrs[key]}" for key in PROVENANCE if key in ds.attrs]
    status = [str(s) for s in ds["status"].values]
    counts = {name: status.count(name) for name in ("ok", "skipped", "failed")}
    lines.append("samples: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    reasons = sorted(
        {str(r) for r, s in zip(ds["reason"].values, status, strict=True) if s == "failed"}
    )
    lines += [f"  failed: {r}" for r in reasons[:5]]
    lines.append("dims: " + ", ".join(f"{d}={n}" for d, n in ds.sizes.items()))
    lines.append("variables: " + ", ".join(sorted(ds.data_vars)))
    answered = [s != "failed" for s in status]
    correct = ds["clean_correct"].values[answered]
    if correct.size:
        lines.append(f"clean accuracy: {100 * correct.mean():.1f}% of {correct.size}")
    if "rel_change_pred" in ds and "source" in ds.dims:
        lines += ["", *knockout_table(ds)]
    if "clean_text" in ds:
        lines += ["", *reply_examples(ds)]
    return lines


def reply_examples(ds: xr.Dataset, samples: int = 3) -> list[str]:
    """A few greedy replies, clean and under each edge's knockout at its worst layer."""
    ok = ds.isel(sample=ds["status"].values == "ok")
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
    layers (the paper's summary), with the layer of the deepest drop and the accuracy there."""
    ok = ds.isel(sample=ds["status"].values == "ok")
    layers = ok["layer"].values
    thirds = np.array_split(layers, 3)
    header = f"{'edge':<34}{'early':>9}{'middle':>9}{'late':>9}{'worst layer':>13}{'acc there':>11}"
    lines = ["relative change of p(answer), % (mean over analysed samples):", header]
    for source in ok["source"].values:
        for target in ok["target"].values:
            change = ok["rel_change_pred"].sel(source=source, target=target)
            if bool(change.isnull().all()):
                continue
            mean = change.mean("sample")
            # A per-head sweep: thirds over the mean of the heads; worst as (layer, head).
            per_layer = (mean.mean("head") if "head" in mean.dims else mean).values
            parts = [float(np.nanmean(per_layer[np.isin(layers, part)])) for part in thirds]
            cell = np.unravel_index(int(np.nanargmin(mean.values)), mean.shape)
            where = {dim: int(mean[dim].values[i]) for dim, i in zip(mean.dims, cell, strict=True)}
            correct = ok["correct"].sel(source=source, target=target, **where)
            accuracy = 100 * float(correct.mean())
            worst = "/".join(f"{'h' if dim == 'head' else ''}{v}" for dim, v in where.items())
            edge = f"{source} -/-> {target}"
            lines.append(
                f"{edge:<34}{parts[0]:>9.1f}{parts[1]:>9.1f}{parts[2]:>9.1f}{worst:>13}{accuracy:>10.1f}%"
            )
    return lines
