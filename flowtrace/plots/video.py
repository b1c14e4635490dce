"""Figures drawn on the video: logit-lens words on patches; attention mass between groups."""

from __future__ import annotations

import base64
import io

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

from flowtrace.plots.common import titled
from flowtrace.store import analysed, keys


def frame_uri(frame: np.ndarray, size: int | None = None, fmt: str = "PNG") -> str:
    """A frame (H, W, 3 uint8) as a data URI, shrunk to `size` pixels on its long side."""
    from PIL import Image

    image = Image.fromarray(frame)
    if size is not None:
        image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    mime = "jpeg" if fmt == "JPEG" else "png"
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def video_lens_chart(
    ds: xr.Dataset, title: str, overlay_layers: tuple[float, ...]
) -> alt.VConcatChart:
    """Top-1 logit-lens word on every video token, drawn on its frame, for a few layers (first
    analysed sample); below, the most frequent top-1 words per layer over all samples."""
    from flowtrace.data import read_frames
    from flowtrace.data.sources import video_file

    ok = analysed(ds)
    first = ok.isel(sample=0)
    num_layers, frames = ok.sizes["layer"], ok.sizes["frame"]
    height, width = ok.sizes["h"], ok.sizes["w"]
    layers = sorted(
        {min(num_layers - 1, max(0, round(f * num_layers) - 1)) for f in overlay_layers}
    )
    pixels = read_frames(video_file(ds.attrs, str(first["video"].item())), frames)
    size = 120
    x_scale = alt.Scale(domain=[0, width])
    y_scale = alt.Scale(domain=[height, 0])
    rows = []
    for layer in layers:
        panels = []
        for t in range(frames):
            image = (
                alt.Chart(
                    pd.DataFrame(
                        {"url": [frame_uri(pixels[t])], "x": [width / 2], "y": [height / 2]}
                    )
                )
                .mark_image(width=size, height=size)
                .encode(
                    x=alt.X("x:Q", scale=x_scale, axis=None),
                    y=alt.Y("y:Q", scale=y_scale, axis=None),
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
                    x=alt.X("x:Q", scale=x_scale, axis=None),
                    y=alt.Y("y:Q", scale=y_scale, axis=None),
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
    sub = f"{ds.attrs.get(keys.MODEL)} · sample {first['sample'].item()}"
    return titled(alt.vconcat(*rows, frequency), title, sub)


def attention_chart(ds: xr.Dataset, title: str, layers: int = 4) -> alt.VConcatChart:
    """Target × source attention mass (mean over samples and heads), clean beside blocked, for a
    few layers spread over the depth."""
    ok = analysed(ds)
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
    sub = f"{ds.attrs.get(keys.MODEL)} · {ok.sizes['sample']} samples · mean over heads"
    return titled(alt.vconcat(*rows), title, sub)
