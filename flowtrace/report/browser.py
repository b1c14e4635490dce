"""The sample browser of a store: pick a sample, see its frames, question, options, clean answer,
its own curves, and per-frame effects drawn on the frames (Vega-Lite params, no scripting).

Thumbnails are not in the spec: it looks them up by `frame_key` in the page's shared
`FRAMES` dataset, so stores over the same videos carry them once per page.
"""

from __future__ import annotations

import hashlib
import json
import string

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from flowtrace.store import analysed, analysed_mask, keys

FRAMES = "ft_frames"  # the page-wide named dataset of thumbnails: {key, url}
SIZE = 64  # thumbnail side in the figure, px


def video_id(video: str) -> str:
    """A short stable name of a video path, shared by every store of a page."""
    return hashlib.sha1(video.encode()).hexdigest()[:10]


def frame_key(video: str, index: int) -> str:
    return f"{video_id(video)}#{index}"


def inline(table: pd.DataFrame) -> alt.InlineData:
    """`table` as CSV inside the spec: a third of the size of JSON rows. Numeric columns are
    parsed as numbers, the rest stay strings (a logit-lens word "1" is a word)."""
    parse = {c: "number" for c in table.columns if table[c].dtype.kind in "iuf"}
    return alt.InlineData(
        values=table.to_csv(index=False), format=alt.DataFormat(type="csv", parse=parse)
    )


def pick_samples(ds: xr.Dataset, limit: int | None) -> xr.Dataset:
    """The counted samples (analysed first), at most `limit` of them spread over the tasks."""
    status, measured = ds["status"].values, analysed_mask(ds).values
    order = [i for i in range(len(status)) if measured[i]]
    order += [i for i in range(len(status)) if status[i] == "skipped"]
    if limit is not None and len(order) > limit:
        tasks = [str(ds["task"].values[i]) for i in order]
        by_task: dict[str, list[int]] = {}
        for i, task in zip(order, tasks, strict=True):
            by_task.setdefault(task, []).append(i)
        # Round robin over tasks keeps every task in a downsampled browser.
        chosen: list[int] = []
        queues = list(by_task.values())
        while len(chosen) < limit:
            for queue in queues:
                if queue and len(chosen) < limit:
                    chosen.append(queue.pop(0))
        order = chosen
    return ds.isel(sample=order)


def frame_count(ds: xr.Dataset) -> int:
    if "frame" in ds.dims:
        return int(ds.sizes["frame"])
    return int(ds.attrs.get(keys.FRAMES, 8) or 8)


def _info_rows(ds: xr.Dataset) -> pd.DataFrame:
    rows = []
    for i in range(ds.sizes["sample"]):
        at = {name: str(ds[name].values[i]) for name in ("sample", "task", "question", "status")}
        candidates = json.loads(str(ds["candidates"].values[i]) or "[]")
        letter = str(ds["answer_letter"].values[i])
        answer = str(ds["answer"].values[i])
        right = bool(ds["clean_correct"].values[i])
        options = "   ".join(f"{string.ascii_uppercase[k]}. {c}" for k, c in enumerate(candidates))
        p = float(ds["clean_prob_pred"].values[i]) if "clean_prob_pred" in ds else float("nan")
        lines = [
            f"{at['task']} · {at['status']}",
            f"Q: {at['question']}",
            f"options: {options}" if options else "open-ended",
            f"answer: {letter + '. ' if letter else ''}{answer}",
            f"clean answer: {ds['clean_pred'].values[i]} ({'right' if right else 'wrong'}, "
            f"p={p:.2f})",
        ]
        rows += [{"s": i, "line": n, "text": t} for n, t in enumerate(lines)]
    return pd.DataFrame(rows)


def _videos(ds: xr.Dataset) -> list[str]:
    """The video file of every sample (relative `video` coordinates lie under the data root)."""
    from flowtrace.data.sources import video_file

    return [str(video_file(ds.attrs, str(v))) for v in ds["video"].values]


def _strip_rows(ds: xr.Dataset, frames: int) -> pd.DataFrame:
    rows = [
        {"s": i, "frame": t, "key": frame_key(v, t)}
        for i, v in enumerate(_videos(ds))
        for t in range(frames)
    ]
    return pd.DataFrame(rows)


def _table(da: xr.DataArray, name: str = "value") -> pd.DataFrame:
    """Rows of `da` by its dims only, the sample as its position `s` in the browser."""
    da = da.reset_coords(drop=True)
    da = da.assign_coords(sample=np.arange(da.sizes["sample"]))
    table = da.to_dataframe(name=name).reset_index().rename(columns={"sample": "s"})
    for column in table.columns:
        if table[column].dtype.kind in "OTU" or str(table[column].dtype).startswith("String"):
            table[column] = table[column].astype(str)
        elif table[column].dtype.kind == "f":
            table[column] = table[column].round(4)
    return table


def per_frame_effects(ds: xr.Dataset) -> tuple[pd.DataFrame, str, str] | None:
    """Per sample, layer, frame and target: the value drawn on each frame, its title and its
    short name.

    Flow-map stores: the knockout effect of cutting frame_t off from the target (the targets
    after the video); attention maps: the attention mass the last token puts on frame_t
    (clean pass, mean over heads); per-frame attention mass (recipes/frame_attention_mass.py):
    the mass each target puts on frame_t, with an `anchor` column marking the store's anchor
    frame (the one with the most mass) of each sample, layer and target.
    """
    ok = analysed(ds)  # pick_samples put these first: their positions are the browser's
    if ok.sizes["sample"] and "attention_mass" in ok and "frame" in ok["attention_mass"].dims:
        return _attention_mass_effects(ok)
    if "source" not in ok.dims or not ok.sizes["sample"]:
        return None
    frames = [str(s) for s in ok["source"].values if str(s).startswith("frame_")]
    if not frames:
        return None
    if "attention" in ok and "condition" in ok.dims:
        mass = ok["attention"].sel(condition=str(ok["condition"].values[0]), target=["last"])
        table = _table(mass.sel(source=frames).mean("head"))
        title = "attention mass of the last token on the frame (clean)"
        short = "attention mass"
    elif "rel_change_pred" in ok and ok.attrs.get(keys.RECIPE_KIND) == "FlowMap":
        targets = [str(t) for t in ok["target"].values if not str(t).startswith("frame_")]
        change = ok["rel_change_pred"].sel(source=frames, target=targets)
        if "head" in change.dims:
            change = change.mean("head")
        table = _table(change)
        title = "relative change of p(answer) when the frame is cut off from the target (%)"
        short = "Δ p(answer) %"
    else:
        return None
    table = table.dropna(subset=["value"])
    if table.empty:  # an eval-only run, or no frame cells measured
        return None
    table["frame"] = table["source"].str.removeprefix("frame_").astype(int)
    return table[["s", "layer", "frame", "target", "value"]], title, short


def _attention_mass_effects(ok: xr.Dataset) -> tuple[pd.DataFrame, str, str] | None:
    """A per-frame attention-mass store's cells, its anchor frames marked."""
    table = _table(ok["attention_mass"]).dropna(subset=["value"])
    if table.empty:
        return None
    table["frame"] = table["frame"].str.removeprefix("frame_").astype(int)
    table["anchor"] = 0
    if "anchor_frame" in ok:
        anchors = _table(ok["anchor_frame"], "anchor_frame")
        table = table.merge(anchors, on=["s", "layer", "target"], how="left")
        table["anchor"] = (table["frame"] == table["anchor_frame"]).astype(int)
    title = "attention mass on the frame (mean over heads; outlined: the anchor frame)"
    return table[["s", "layer", "frame", "target", "value", "anchor"]], title, "attention mass"


def _curve_rows(ds: xr.Dataset) -> tuple[pd.DataFrame, str, str] | None:
    """The sample's own curves: (table with s, x, series, value; x title; y title)."""
    ok = analysed(ds)  # pick_samples put these first: their positions are the browser's
    if not ok.sizes["sample"]:
        return None
    kind = ds.attrs.get(keys.RECIPE_KIND, "Knockout")
    if kind == "LayerProbe":
        parts = []
        for var, name in (("prob_true", "true letter"), ("prob_false", "false letters")):
            table = _table(ok[var])
            table["series"] = name + " · " + table["lens"]
            parts.append(table)
        table = pd.concat(parts).rename(columns={"layer": "x"})
        return table[["s", "x", "series", "value"]], "layer", "probability"
    if kind == "EffectivePathway":
        table = _table(ok["rel_change_pred"])
        table["series"] = table["x"] = table["condition"]
        return table[["s", "x", "series", "value"]], "condition", "relative change in p(answer) (%)"
    if kind == "FlowMap" or "rel_change_pred" not in ok or "layer" not in ok.dims:
        return None  # the flow map's per-frame curves come from its per-frame effects
    change = ok["rel_change_pred"]
    if "head" in change.dims:
        change = change.mean("head")
    table = _table(change).dropna(subset=["value"])
    others = [d for d in change.dims if d not in ("sample", "layer")]
    if others == ["source", "target"]:
        table["series"] = table["source"] + " -/-> " + table["target"]
    else:  # a kind with dims of its own: one line per combination of them
        table["series"] = (
            table[others].astype(str).agg(" · ".join, axis=1) if others else "rel_change_pred"
        )
    table = table.rename(columns={"layer": "x"})
    return table[["s", "x", "series", "value"]], "layer", "relative change in p(answer) (%)"


def _lens_rows(ds: xr.Dataset) -> pd.DataFrame | None:
    if "top_token" not in ds or "frame" not in ds.dims:
        return None
    ok = analysed(ds)  # pick_samples put these first: their positions are the browser's
    table = _table(ok["top_token"].sel(k=0), "word")
    table["p"] = _table(ok["top_prob"].sel(k=0), "p")["p"].round(2)
    return table[["s", "layer", "frame", "h", "w", "word", "p"]]


def sample_browser(
    ds: xr.Dataset, limit: int | None = None
) -> tuple[alt.VConcatChart, dict[str, int]]:
    """The browser of `ds` (at most `limit` samples) and the frames it shows per video."""
    ds = pick_samples(ds, limit)
    ids = [str(s) for s in ds["sample"].values]
    labels = [
        f"{s} ({st}, clean {'right' if bool(c) else 'wrong'})"
        for s, st, c in zip(ids, ds["status"].values, ds["clean_correct"].values, strict=True)
    ]
    pick = alt.param(
        name="sample",
        value=0,
        bind=alt.binding_select(options=list(range(len(ids))), labels=labels, name="sample "),
    )
    chosen = alt.datum.s == pick
    frames = frame_count(ds)
    width = frames * SIZE
    info = (
        alt.Chart(inline(_info_rows(ds)))
        .mark_text(align="left", baseline="top", fontSize=12)
        .encode(x=alt.value(0), y=alt.Y("line:O", axis=None), text="text:N")
        .transform_filter(chosen)
        .properties(width=max(width, 480), height=90, view=alt.ViewConfig(stroke=None))
    )
    x_scale = alt.Scale(domain=[0, frames], nice=False, zero=False)
    y_scale = alt.Scale(domain=[1, 0], nice=False, zero=False)
    x_axis = alt.X("x:Q", scale=x_scale, axis=None)
    y_axis = alt.Y("y:Q", scale=y_scale, axis=None)
    strip = (
        alt.Chart(inline(_strip_rows(ds, frames)))
        .transform_filter(chosen)
        .transform_lookup(lookup="key", from_=alt.LookupData(alt.Data(name=FRAMES), "key", ["url"]))
        .transform_calculate(x="datum.frame + 0.5", y="0.5")
        .mark_image(width=SIZE - 4, height=SIZE - 4, align="center", baseline="middle")
        .encode(x=x_axis, y=y_axis, url="url:N", tooltip=["frame:O"])
    )
    layers = [strip]
    params: list = [pick]
    below: list = []
    effects = per_frame_effects(ds)
    num_layers = int(ds.sizes["layer"]) if "layer" in ds.dims else 0
    at_layer = None
    if effects is not None or _lens_rows(ds) is not None:
        at_layer = alt.param(
            name="frame_layer",
            value=num_layers // 2,
            bind=alt.binding_range(min=0, max=max(0, num_layers - 1), step=1, name="layer "),
        )
        params.append(at_layer)
    if effects is not None:
        table, title, short = effects
        targets = list(dict.fromkeys(table["target"]))
        target = alt.param(
            name="frame_target",
            value="last" if "last" in targets else targets[0],
            bind=alt.binding_select(
                options=targets, name="target " if "attention" in title else "cut off from "
            ),
        )
        params.append(target)
        limit_value = float(table["value"].abs().max()) or 1.0
        attention = "attention" in title
        scale = (
            alt.Scale(scheme="viridis", domain=[0, limit_value])
            if attention
            else alt.Scale(scheme="redblue", domain=[-limit_value, limit_value])
        )
        on_frame = (
            alt.Chart(inline(table))
            .transform_filter(chosen)
            .transform_filter((alt.datum.layer == at_layer) & (alt.datum.target == target))
            .transform_calculate(
                x="datum.frame + 0.06",
                x2="datum.frame + 0.94",
                label=f"format(datum.value, '{'.2f' if attention else '+.1f'}')",
            )
        )
        bar = on_frame.mark_rect(opacity=0.85, y=0.74 * SIZE, y2=0.97 * SIZE).encode(
            x=alt.X("x:Q", scale=x_scale, axis=None),
            x2="x2:Q",
            color=alt.Color("value:Q", scale=scale, title=short),
            tooltip=["frame:O", "layer:O", "target:N", alt.Tooltip("value:Q", format=".3f")],
        )
        text = (
            on_frame.transform_calculate(xc="datum.frame + 0.5")
            .mark_text(y=0.86 * SIZE, fontSize=10, fontWeight="bold", color="black")
            .encode(x=alt.X("xc:Q", scale=x_scale, axis=None), text="label:N")
        )
        layers += [bar, text]
        if "anchor" in table:  # the anchor frame at the layer and target, outlined
            outline = on_frame.transform_filter(alt.datum.anchor == 1).mark_rect(
                filled=False, stroke="orange", strokeWidth=3, y=1, y2=SIZE - 1
            )
            layers.append(
                outline.encode(
                    x=alt.X("x:Q", scale=x_scale, axis=None),
                    x2="x2:Q",
                    tooltip=[alt.Tooltip("frame:O", title="anchor frame"), "layer:O", "target:N"],
                )
            )
        curves = (
            alt.Chart(inline(table))
            .transform_filter(chosen)
            .transform_filter(alt.datum.target == target)
            .mark_line(point=True)
            .encode(
                x=alt.X("layer:Q", axis=alt.Axis(tickMinStep=1)),
                y=alt.Y("value:Q", title=short),
                color=alt.Color("frame:O", scale=alt.Scale(scheme="viridis")),
                tooltip=["frame:O", "layer:O", alt.Tooltip("value:Q", format=".3f")],
            )
            .properties(width=max(width, 480), height=200, title=f"this sample: {title}")
        )
        rule = (
            alt.Chart(pd.DataFrame({"x": [0]}))
            .transform_calculate(layer="frame_layer")
            .mark_rule(strokeDash=[3, 3], color="gray")
            .encode(x="layer:Q")
        )
        below.append(curves + rule)
    lens = _lens_rows(ds)
    if lens is not None:
        height, width_cells = int(ds.sizes["h"]), int(ds.sizes["w"])
        words = (
            alt.Chart(inline(lens))
            .transform_filter(chosen)
            .transform_filter(alt.datum.layer == at_layer)
            .transform_calculate(
                x=f"datum.frame + (datum.w + 0.5) / {width_cells}",
                y=f"(datum.h + 0.5) / {height}",
            )
            .mark_text(
                color="white", fontSize=8, fontWeight="bold", stroke="black", strokeWidth=0.3
            )
            .encode(
                x=x_axis,
                y=y_axis,
                text="word:N",
                tooltip=["frame:O", "h:O", "w:O", "word:N", alt.Tooltip("p:Q", format=".2f")],
            )
        )
        layers.append(words)
    frames_chart = alt.layer(*layers).properties(
        width=width,
        height=SIZE,
        title="frames"
        + (" · logit-lens top-1 word on each patch at the layer" if lens is not None else "")
        + (f" · {effects[1]}" if effects is not None else ""),
    )
    curves = _curve_rows(ds)
    if curves is not None:
        table, x_title, y_title = curves
        categorical = x_title == "condition"
        mark = alt.Chart(inline(table)).transform_filter(chosen)
        mark = mark.mark_bar() if categorical else mark.mark_line(point=True)
        below.append(
            mark.encode(
                x=alt.X("x:N" if categorical else "x:Q", title=x_title),
                y=alt.Y("value:Q", title=y_title),
                color=alt.Color("series:N", title=None),
                tooltip=[
                    "series:N",
                    "x:N" if categorical else "x:Q",
                    alt.Tooltip("value:Q", format=".3f"),
                ],
            ).properties(width=max(width, 480), height=200, title="this sample's curves")
        )
    chart = alt.vconcat(info, frames_chart, *below).add_params(*params)
    videos = dict.fromkeys(_videos(ds), frames)
    return chart.properties(title="sample browser"), videos
