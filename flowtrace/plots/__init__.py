"""Altair figures from cubes (HTML + PNG through vl-convert). Never imports torch."""

from __future__ import annotations

import json
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

Z95 = 1.96


def knockout_summary(ds: xr.Dataset, measure: str = "rel_change_pred") -> pd.DataFrame:
    """Per (condition, layer): mean of `measure` over analysed samples, 95% CI, accuracy in %."""
    ok = ds.isel(sample=ds["status"].values == "ok")
    rows = []
    for source in ok["source"].values:
        for target in ok["target"].values:
            values = ok[measure].sel(source=source, target=target)
            if values.size == 0 or bool(values.isnull().all()):
                continue
            correct = ok["correct"].sel(source=source, target=target).astype(float)
            for layer in ok["layer"].values:
                at_layer = values.sel(layer=layer).values.astype(float)
                mean, low, high = _mean_ci(at_layer)
                rows.append(
                    {
                        "condition": f"{source} -/-> {target}",
                        "layer": int(layer),
                        "mean": mean,
                        "low": low,
                        "high": high,
                        "accuracy": 100 * float(correct.sel(layer=layer).mean("sample")),
                        "n": int((~np.isnan(at_layer)).sum()),
                    }
                )
    return pd.DataFrame(rows)


def knockout_chart(ds: xr.Dataset, title: str) -> alt.HConcatChart:
    """The paper's knockout figure: relative change of the answer's probability per layer
    (mean over samples, 95% CI band), beside accuracy per layer with the clean accuracy."""
    table = knockout_summary(ds)
    n = int((ds["status"] == "ok").sum())
    clean_acc = 100 * float(ds["clean_correct"].where(ds["status"] != "failed").mean())
    window = f"window {ds.attrs.get('window')} ({ds.attrs.get('window_style')})"
    color = alt.Color("condition:N", title="blocked edge")
    x = alt.X("layer:Q", title=f"layer ({window})", axis=alt.Axis(tickMinStep=1))
    base = alt.Chart(table)
    band = base.mark_area(opacity=0.2).encode(x=x, y="low:Q", y2="high:Q", color=color)
    line = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("mean:Q", title="relative change in p(answer) (%)"),
        color=color,
        tooltip=["condition", "layer", alt.Tooltip("mean:Q", format=".2f"), "n"],
    )
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[4, 4]).encode(y="y:Q")
    prob = (band + line + zero).properties(width=360, height=240, title=f"{n} samples")
    acc_line = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("accuracy:Q", title="accuracy (%)", scale=alt.Scale(domain=[0, 100])),
        color=color,
        tooltip=["condition", "layer", alt.Tooltip("accuracy:Q", format=".1f")],
    )
    clean = (
        alt.Chart(pd.DataFrame({"y": [clean_acc], "label": [f"clean {clean_acc:.1f}%"]}))
        .mark_rule(color="gray", strokeDash=[4, 4])
        .encode(y="y:Q", tooltip=["label"])
    )
    acc = (acc_line + clean).properties(width=360, height=240, title="accuracy after knockout")
    subtitle = f"{ds.attrs.get('model')} · {ds.attrs.get('data')}"
    return alt.hconcat(prob, acc).properties(
        title=alt.TitleParams(title, subtitle=subtitle, anchor="start")
    )


def flow_map_table(ds: xr.Dataset, measure: str = "rel_change_pred") -> pd.DataFrame:
    """Mean of `measure` over analysed samples per (layer, source, target) with an edge."""
    ok = ds.isel(sample=ds["status"].values == "ok")
    mean = ok[measure].mean("sample", skipna=True)
    accuracy = 100 * ok["correct"].where(ok[measure].notnull()).mean("sample", skipna=True)
    table = xr.Dataset({"mean": mean, "accuracy": accuracy}).to_dataframe().reset_index()
    return table.dropna(subset=["mean"])


def flow_map_chart(ds: xr.Dataset, title: str) -> alt.HConcatChart:
    """Source × target heatmap of the knockout effect at the layer the slider picks; click a
    cell for its layer curve."""
    table = flow_map_table(ds)
    sources = [str(s) for s in ds["source"].values]
    targets = [str(t) for t in ds["target"].values]
    layers = int(ds.sizes["layer"])
    # Open on the strongest cell: its layer on the slider, its curve on the right.
    first = table.loc[table["mean"].abs().idxmax()] if len(table) else None
    slider = alt.param(
        name="at_layer",
        value=int(first["layer"]) if first is not None else 0,
        bind=alt.binding_range(min=0, max=layers - 1, step=1, name="layer "),
    )
    start = [{"source": first["source"], "target": first["target"]}] if first is not None else []
    pick = alt.selection_point(name="edge", fields=["source", "target"], value=start)
    limit = float(table["mean"].abs().max()) if len(table) else 1.0
    heat = (
        alt.Chart(table)
        .mark_rect()
        .encode(
            x=alt.X("source:N", sort=sources, title="source (keys cut)"),
            y=alt.Y("target:N", sort=targets, title="target (queries)"),
            color=alt.Color(
                "mean:Q",
                title="Δ p(answer) %",
                scale=alt.Scale(scheme="redblue", domain=[-limit, limit]),
            ),
            stroke=alt.condition(pick, alt.value("black"), alt.value(None)),
            tooltip=[
                "source",
                "target",
                "layer",
                alt.Tooltip("mean:Q", format=".2f"),
                alt.Tooltip("accuracy:Q", format=".1f"),
            ],
        )
        .transform_filter(alt.datum.layer == slider)
        .add_params(slider, pick)
        .properties(width=360, height=360, title="relative change of p(answer) at the layer")
    )
    curve = (
        alt.Chart(table)
        .transform_filter(pick)
        .transform_calculate(edge="datum.source + ' -/-> ' + datum.target")
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("mean:Q", title="relative change in p(answer) (%)"),
            color=alt.Color("edge:N", title="clicked edge"),
            tooltip=["edge:N", "layer", alt.Tooltip("mean:Q", format=".2f")],
        )
        .properties(width=360, height=240, title="layer curve of the clicked cell")
    )
    n = int((ds["status"] == "ok").sum())
    window = f"window {ds.attrs.get('window')} ({ds.attrs.get('window_style')})"
    subtitle = f"{ds.attrs.get('model')} · {ds.attrs.get('data')} · {n} samples · {window}"
    return alt.hconcat(heat, curve).properties(
        title=alt.TitleParams(title, subtitle=subtitle, anchor="start")
    )


def head_chart(ds: xr.Dataset, title: str) -> alt.VConcatChart:
    """A per-head sweep: heads ranked by their largest effect over layers, per blocked edge,
    above the layer × head map of the effect."""
    ok = ds.isel(sample=ds["status"].values == "ok")
    effect = ok["rel_change_pred"].mean("sample", skipna=True)
    table = effect.to_dataframe(name="mean").reset_index().dropna(subset=["mean"])
    table["edge"] = table["source"].astype(str) + " -/-> " + table["target"].astype(str)
    table["size"] = table["mean"].abs()
    peak = table.groupby(["edge", "head"], as_index=False)["size"].max()
    bars = (
        alt.Chart(peak)
        .mark_bar()
        .encode(
            x=alt.X("size:Q", title="largest |relative change in p(answer)| over layers (%)"),
            y=alt.Y("head:N", sort="-x", title="head (ranked)"),
            tooltip=["edge", "head", alt.Tooltip("size:Q", format=".2f")],
        )
        .properties(width=300, height=alt.Step(12))
        .facet(column=alt.Column("edge:N", title=None))
        .resolve_scale(y="independent")
    )
    limit = float(table["size"].max()) if len(table) else 1.0
    heat = (
        alt.Chart(table)
        .mark_rect()
        .encode(
            x=alt.X("layer:O"),
            y=alt.Y("head:O"),
            color=alt.Color(
                "mean:Q",
                title="Δ p(answer) %",
                scale=alt.Scale(scheme="redblue", domain=[-limit, limit]),
            ),
            tooltip=["edge", "layer", "head", alt.Tooltip("mean:Q", format=".2f")],
        )
        .properties(width=300, height=alt.Step(12))
        .facet(column=alt.Column("edge:N", title=None))
    )
    n = int((ds["status"] == "ok").sum())
    window = f"window {ds.attrs.get('window')} ({ds.attrs.get('window_style')})"
    subtitle = f"{ds.attrs.get('model')} · {ds.attrs.get('data')} · {n} samples · {window}"
    return alt.vconcat(bars, heat).properties(
        title=alt.TitleParams(f"{title}: head by head", subtitle=subtitle, anchor="start")
    )


def save_chart(chart: alt.TopLevelMixin, stem: Path, scale: float = 2) -> list[Path]:
    """Write `stem`.html and `stem`.png (at `scale` × the chart's size) next to each other."""
    paths = [stem.with_suffix(".html"), stem.with_suffix(".png")]
    chart.save(str(paths[0]))
    chart.save(str(paths[1]), scale_factor=scale)
    return paths


def _band(table: pd.DataFrame, x: str, y: str, color: str, title: str) -> alt.LayerChart:
    base = alt.Chart(table)
    enc_x = alt.X(f"{x}:Q", axis=alt.Axis(tickMinStep=1))
    band = base.mark_area(opacity=0.2).encode(x=enc_x, y="low:Q", y2="high:Q", color=f"{color}:N")
    line = base.mark_line(point=True).encode(
        x=enc_x, y=alt.Y("mean:Q", title=y), color=f"{color}:N", tooltip=[color, x, "mean:Q"]
    )
    return (band + line).properties(width=320, height=220, title=title)


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    half = Z95 * float(values.std(ddof=1)) / np.sqrt(values.size) if values.size > 1 else 0.0
    return mean, mean - half, mean + half


def gen_prob_chart(ds: xr.Dataset, title: str) -> alt.HConcatChart:
    """Layer-wise probability of the true vs the false option letters at the last token."""
    ok = ds.isel(sample=ds["status"].values == "ok")
    panels = []
    for lens in ok["lens"].values:
        rows = []
        for name, var in (("true option", "prob_true"), ("false options (mean)", "prob_false")):
            for layer in ok["layer"].values:
                values = ok[var].sel(lens=lens, layer=layer).values.astype(float)
                mean, low, high = _mean_ci(values)
                rows.append(
                    {"letter": name, "layer": int(layer), "mean": mean, "low": low, "high": high}
                )
        lens_title = "with final norm" if lens == "norm" else "without final norm"
        panels.append(_band(pd.DataFrame(rows), "layer", "probability", "letter", lens_title))
    subtitle = f"{ds.attrs.get('model')} · {ds.attrs.get('data')} · {ok.sizes['sample']} samples"
    return alt.hconcat(*panels).properties(
        title=alt.TitleParams(title, subtitle=subtitle, anchor="start")
    )


def accuracy_chart(ds: xr.Dataset, title: str) -> alt.Chart:
    """Clean accuracy per task (eval-only runs)."""
    ok = ds.isel(sample=ds["status"].values == "ok")
    table = (
        pd.DataFrame(
            {
                "task": [str(t) for t in ok["task"].values],
                "correct": ok["clean_correct"].values.astype(float) * 100,
            }
        )
        .groupby("task", as_index=False)
        .agg(accuracy=("correct", "mean"), n=("correct", "size"))
    )
    return (
        alt.Chart(table)
        .mark_bar()
        .encode(
            x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 100]), title="clean accuracy (%)"),
            y=alt.Y("task:N", title=None),
            tooltip=["task", alt.Tooltip("accuracy:Q", format=".1f"), "n"],
        )
        .properties(
            width=360,
            title=alt.TitleParams(f"{title} — clean accuracy", subtitle=str(ds.attrs.get("model"))),
        )
    )


def pathway_chart(ds: xr.Dataset, title: str) -> alt.LayerChart:
    """Accuracy: clean, with only the effective pathways, and with random cuts of equal budget."""
    ok = ds.isel(sample=ds["status"].values == "ok")
    rows = [{"run": "clean", "accuracy": 100 * float(ok["clean_correct"].mean()), "kept": 100.0}]
    for condition in ok["condition"].values:
        sel = ok.sel(condition=condition)
        rows.append(
            {
                "run": str(condition),
                "accuracy": 100 * float(sel["correct"].mean()),
                "kept": float(sel["edges_kept_pct"].mean()),
            }
        )
    table = pd.DataFrame(rows)
    table["label"] = [
        f"{a:.1f}% · {k:.0f}% edges kept" for a, k in zip(table.accuracy, table.kept, strict=True)
    ]
    base = alt.Chart(table).encode(
        y=alt.Y("run:N", sort=None, title=None),
        x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 100]), title="accuracy (%)"),
    )
    bars = base.mark_bar().encode(color=alt.Color("run:N", legend=None))
    text = base.mark_text(align="left", dx=4).encode(text="label:N")
    subtitle = f"{ds.attrs.get('model')} · {ds.attrs.get('data')} · {ok.sizes['sample']} samples"
    return (bars + text).properties(
        width=420, height=120, title=alt.TitleParams(title, subtitle=subtitle, anchor="start")
    )


def _frame_uri(frame: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def video_lens_chart(
    ds: xr.Dataset, title: str, overlay_layers: tuple[float, ...]
) -> alt.VConcatChart:
    """Top-1 logit-lens word on every video token, drawn on its frame, for a few layers (first
    analysed sample); below, the most frequent top-1 words per layer over all samples."""
    from flowtrace.data import read_frames

    ok = ds.isel(sample=ds["status"].values == "ok")
    first = ok.isel(sample=0)
    num_layers, frames = ok.sizes["layer"], ok.sizes["frame"]
    height, width = ok.sizes["h"], ok.sizes["w"]
    layers = sorted(
        {min(num_layers - 1, max(0, round(f * num_layers) - 1)) for f in overlay_layers}
    )
    pixels = read_frames(Path(str(first["video"].item())), frames)
    size = 120
    rows = []
    for layer in layers:
        panels = []
        for t in range(frames):
            image = (
                alt.Chart(
                    pd.DataFrame(
                        {"url": [_frame_uri(pixels[t])], "x": [width / 2], "y": [height / 2]}
                    )
                )
                .mark_image(width=size, height=size)
                .encode(
                    x=alt.X("x:Q", scale=alt.Scale(domain=[0, width]), axis=None),
                    y=alt.Y("y:Q", scale=alt.Scale(domain=[height, 0]), axis=None),
                    url="url:N",
                )
            )
            cells = first["top_token"].sel(layer=layer, frame=t, k=0).values
            probs = first["top_prob"].sel(layer=layer, frame=t, k=0).values
            table = pd.DataFrame(
                [
                    {"x": w + 0.5, "y": h + 0.5, "word": str(cells[h, w]), "p": float(probs[h, w])}
                    for h in range(height)
                    for w in range(width)
                ]
            )
            words = (
                alt.Chart(table)
                .mark_text(color="white", fontSize=9, fontWeight="bold")
                .encode(
                    x=alt.X("x:Q", scale=alt.Scale(domain=[0, width]), axis=None),
                    y=alt.Y("y:Q", scale=alt.Scale(domain=[height, 0]), axis=None),
                    text="word:N",
                    tooltip=["word", alt.Tooltip("p:Q", format=".2f")],
                )
            )
            panels.append((image + words).properties(width=size, height=size, title=f"t={t}"))
        rows.append(alt.hconcat(*panels).properties(title=f"layer {layer}"))
    top1 = ok["top_token"].sel(k=0)
    counts = []
    for layer in ok["layer"].values:
        values = pd.Series([str(x) for x in top1.sel(layer=layer).values.ravel()])
        for word, n in values.value_counts().head(8).items():
            counts.append({"layer": int(layer), "word": word, "share": n / len(values)})
    frequency = (
        alt.Chart(pd.DataFrame(counts))
        .mark_bar()
        .encode(
            x=alt.X("share:Q", axis=alt.Axis(format="%"), title="share of video tokens"),
            y=alt.Y("word:N", sort="-x", title=None),
            facet=alt.Facet("layer:O", columns=4),
        )
        .properties(width=150, height=110)
    )
    subtitle = f"{ds.attrs.get('model')} · sample {first['sample'].item()}"
    return alt.vconcat(*rows, frequency).properties(
        title=alt.TitleParams(title, subtitle=subtitle, anchor="start")
    )


def attention_chart(ds: xr.Dataset, title: str, layers: int = 4) -> alt.VConcatChart:
    """Target × source attention mass (mean over samples and heads), clean beside blocked, for a
    few layers spread over the depth."""
    ok = ds.isel(sample=ds["status"].values == "ok")
    mean = ok["attention"].mean(("sample", "head"))
    num_layers = ok.sizes["layer"]
    chosen = sorted({round(i * (num_layers - 1) / max(1, layers - 1)) for i in range(layers)})
    order = [str(x) for x in ok["source"].values]
    rows = []
    for layer in chosen:
        panels = []
        for condition in ok["condition"].values:
            grid = mean.sel(layer=layer, condition=condition)
            table = grid.to_dataframe(name="mass").reset_index()
            table["target"] = table["target"].astype(str)
            table["source"] = table["source"].astype(str)
            panels.append(
                alt.Chart(table[["target", "source", "mass"]])
                .mark_rect()
                .encode(
                    x=alt.X("source:N", sort=order, title="source (key)"),
                    y=alt.Y("target:N", sort=order, title="target (query)"),
                    color=alt.Color("mass:Q", scale=alt.Scale(scheme="viridis", domain=[0, 1])),
                    tooltip=["target", "source", alt.Tooltip("mass:Q", format=".3f")],
                )
                .properties(width=220, height=220, title=f"layer {layer} · {condition}")
            )
        rows.append(alt.hconcat(*panels))
    subtitle = f"{ds.attrs.get('model')} · {ok.sizes['sample']} samples · mean over heads"
    return alt.vconcat(*rows).properties(
        title=alt.TitleParams(title, subtitle=subtitle, anchor="start")
    )


def chart_for(ds: xr.Dataset) -> alt.TopLevelMixin:
    """The figure of a store, from its attributes alone (no model, no recipe file)."""
    title = str(ds.attrs.get("recipe_title", ds.attrs.get("recipe", "")))
    if int(ds.attrs.get("eval_only", 0)):
        return accuracy_chart(ds, title)
    kind = ds.attrs.get("recipe_kind", "Knockout")
    if "head" in ds.dims and "rel_change_pred" in ds:
        return head_chart(ds, title)
    if kind == "LayerProbe":
        return gen_prob_chart(ds, title)
    if kind == "VideoLogitLens":
        overlay = json.loads(ds.attrs.get("overlay_layers", "[]")) or [0.25, 0.5, 0.75, 1.0]
        return video_lens_chart(ds, title, tuple(overlay))
    if kind == "EffectivePathway":
        return pathway_chart(ds, title)
    if kind == "AttentionMap":
        return attention_chart(ds, title)
    if kind == "FlowMap":
        return flow_map_chart(ds, title)
    return knockout_chart(ds, title)


def compare_chart(stores: dict[str, xr.Dataset]) -> alt.FacetChart:
    """Knockout curves of several stores (models, datasets, settings) side by side: one panel per
    blocked edge, one line per store."""
    tables = []
    for run, ds in stores.items():
        if ds.attrs.get("recipe_kind", "Knockout") != "Knockout" or int(
            ds.attrs.get("eval_only", 0)
        ):
            raise ValueError(f"{run}: only knockout stores can be compared (this one is not)")
        table = knockout_summary(ds)
        table["run"] = run
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    x = alt.X("layer:Q", axis=alt.Axis(tickMinStep=1))
    base = alt.Chart().encode(x=x, color=alt.Color("run:N", title="store"))
    band = base.mark_area(opacity=0.15).encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title="relative change in p(answer) (%)"),
        tooltip=["run", "condition", "layer", alt.Tooltip("mean:Q", format=".2f"), "n"],
    )
    return (
        alt.layer(band, line, data=table)
        .properties(width=300, height=220)
        .facet(facet=alt.Facet("condition:N", title=None), columns=3)
        .properties(title="Knockout curves compared across stores")
    )
