"""Layer-wise probability (logit lens at the last token): option letters and top tokens per
layer."""

from __future__ import annotations

import numpy as np
import torch

from flowtrace.kinds.common import (
    Decoder,
    ReadsCleanPass,
    Step,
)
from flowtrace.kinds.declarations import (
    LayerProbe,
)
from flowtrace.models import LoadedModel
from flowtrace.store.cube import CLEAN_VARIABLES, Schema, Variable

LENSES = ("norm", "raw")  # logit lens with the final norm (as the model does) and without


class ProbeMeasure(ReadsCleanPass):
    """Logit lens at the last token: option-letter probabilities and top-k tokens per layer."""

    def __init__(self, recipe: LayerProbe, loaded: LoadedModel, num_options: int) -> None:
        self.recipe, self.loaded = recipe, loaded
        self.letters = [chr(ord("A") + i) for i in range(num_options)]
        self.decode = Decoder(loaded)
        lens = ("layer", "lens")
        self.schema = Schema(
            {
                **CLEAN_VARIABLES,
                "prob_option": Variable((*lens, "option"), "float32", np.nan),
                "prob_true": Variable(lens, "float32", np.nan),
                "prob_false": Variable(lens, "float32", np.nan),
                "top_token": Variable((*lens, "k"), "str", ""),
                "top_prob": Variable((*lens, "k"), "float32", np.nan),
            },
            {
                "layer": np.arange(loaded.num_layers),
                "lens": LENSES,
                "option": self.letters,
                "k": np.arange(recipe.top_k),
            },
        )

    def fill(self, step: Step) -> None:
        engine, prepared, record = step.engine, step.prepared, step.record
        layout, values = prepared.layout, record.values
        ids = torch.tensor([self.loaded.letter_id(x) for x in layout.option_letters])
        is_true = torch.tensor([x == layout.true_letter for x in layout.option_letters])
        states = engine.states(prepared.inputs, [-1])[:, 0]  # one forward for both lenses
        for lens_index, lens in enumerate(LENSES):
            lensed = engine.unembed(states, norm=lens == "norm").cpu()  # (layers, V)
            options = lensed[:, ids]
            values["prob_option"][:, lens_index, : len(ids)] = options.numpy()
            values["prob_true"][:, lens_index] = options[:, is_true].sum(-1).numpy()
            values["prob_false"][:, lens_index] = options[:, ~is_true].mean(-1).numpy()
            top = lensed.topk(self.recipe.top_k, dim=-1)
            values["top_prob"][:, lens_index] = top.values.numpy()
            words = [[self.decode(int(t)) for t in row] for row in top.indices]
            values["top_token"][:, lens_index] = np.asarray(words, dtype=object)
