"""Logit lens over every video token at every layer."""

from __future__ import annotations

import numpy as np

from flowtrace.data import SampleError
from flowtrace.kinds.common import (
    Decoder,
    ReadsCleanPass,
    Step,
)
from flowtrace.kinds.declarations import (
    VideoLogitLens,
)
from flowtrace.models import LoadedModel
from flowtrace.store.cube import CLEAN_VARIABLES, Schema, Variable


class VideoLensMeasure(ReadsCleanPass):
    """Top-k tokens of the logit lens (with the final norm) at every video token and layer."""

    def __init__(self, recipe: VideoLogitLens, loaded: LoadedModel, grid: tuple[int, int, int]):
        self.recipe, self.loaded, self.grid = recipe, loaded, grid
        self.decode = Decoder(loaded)
        frames, height, width = grid
        dims = ("layer", "frame", "h", "w", "k")
        self.schema = Schema(
            {
                **CLEAN_VARIABLES,
                "top_token": Variable(dims, "str", ""),
                "top_prob": Variable(dims, "float32", np.nan),
            },
            {
                "layer": np.arange(loaded.num_layers),
                "frame": np.arange(frames),
                "h": np.arange(height),
                "w": np.arange(width),
                "k": np.arange(recipe.top_k),
            },
        )

    def fill(self, step: Step) -> None:
        engine, prepared, record = step.engine, step.prepared, step.record
        positions = prepared.layout.video_positions()  # (T, H, W)
        if positions.shape != self.grid:
            raise SampleError(
                f"this video's token grid {'x'.join(map(str, positions.shape))} differs from the "
                f"run's {'x'.join(map(str, self.grid))} (the model keeps each video's aspect "
                "ratio, and one store holds one grid); analyse videos of one shape per run"
            )
        lensed = engine.logit_lens(prepared.inputs, norm=True, positions=positions.ravel().tolist())
        top = lensed.topk(self.recipe.top_k, dim=-1)  # (layers, T·H·W, k)
        shape = (self.loaded.num_layers, *positions.shape, self.recipe.top_k)
        ids = top.indices.cpu().numpy()
        unique, inverse = np.unique(ids, return_inverse=True)
        words = np.asarray([self.decode(int(t)) for t in unique], dtype=object)
        record.values["top_token"][...] = words[inverse].reshape(shape)
        record.values["top_prob"][...] = top.values.reshape(shape).cpu().numpy()
