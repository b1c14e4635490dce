"""Attention maps: group-to-group attention mass per layer and head, clean and cut."""

from __future__ import annotations

import numpy as np
import torch

from flowtrace.engine import KnockoutCondition
from flowtrace.kinds.common import (
    ReadsCleanPass,
    Step,
)
from flowtrace.kinds.declarations import (
    AttentionMap,
)
from flowtrace.models import LoadedModel
from flowtrace.store.cube import CLEAN_VARIABLES, Schema, Variable
from flowtrace.tokens.edges import blocked_edges


class AttentionMeasure(ReadsCleanPass):
    """Group-to-group attention mass per layer and head, clean and with the recipe's cut."""

    CONDITIONS = ("clean", "blocked")

    def __init__(self, recipe: AttentionMap, loaded: LoadedModel, names: list[str]) -> None:
        self.recipe, self.loaded, self.names = recipe, loaded, names
        heads = loaded.model.config.get_text_config().num_attention_heads
        self.schema = Schema(
            {
                **CLEAN_VARIABLES,
                "attention": Variable(
                    ("condition", "layer", "head", "target", "source"), "float32", np.nan
                ),
            },
            {
                "condition": self.CONDITIONS,
                "layer": np.arange(loaded.num_layers),
                "head": np.arange(heads),
                "target": names,
                "source": names,
            },
        )

    def fill(self, step: Step) -> None:
        engine, prepared, record = step.engine, step.prepared, step.record
        layout = prepared.layout
        groups = torch.zeros(len(self.names), layout.seq_len)
        for i, name in enumerate(self.names):
            groups[i, layout[name]] = 1.0
        cut = torch.from_numpy(blocked_edges(self.recipe.blocked, layout))
        conditions = [
            KnockoutCondition({}),
            KnockoutCondition.window(cut, range(self.loaded.num_layers)),
        ]
        mass = engine.attention_mass(prepared.inputs, groups, conditions)
        record.values["attention"][...] = mass.cpu().numpy()
