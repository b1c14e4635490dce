"""Effective pathways: the answer with only the pathways kept, against random cuts of equal
budget."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from flowtrace.data import Sample
from flowtrace.engine import KnockoutCondition, ReferenceEngine
from flowtrace.kinds.common import (
    Clean,
    Decoder,
    Plan,
    Step,
    answer_variables,
    record_answers,
)
from flowtrace.kinds.declarations import (
    EffectivePathway,
)
from flowtrace.models import LoadedModel, Prepared
from flowtrace.store.cube import CLEAN_VARIABLES, Schema, Variable
from flowtrace.tokens.edge_plans import counted_edges, random_plan
from flowtrace.tokens.edge_share import causal_pairs, kept_shares

EDGE_MEASURES = (
    "edges_kept_pct: % of causal (query, key) pairs from the first video token on kept, over "
    "all layers (flowtrace's count); paper_kept_pct: % of all causal pairs kept, T(T+1)/2 per "
    "layer with the system prompt (the reference code's attention_amount); over samples the "
    "paper pools kept pairs over attention_pairs (flowtrace.tokens.edge_share.pooled)"
)


class PathwayMeasure:
    """The answer with only the effective pathways kept, and with random cuts of equal budget."""

    CONDITIONS = ("pathway", "random")

    def __init__(self, recipe: EffectivePathway, loaded: LoadedModel, seed: int) -> None:
        # A recipe may name the pathway each model keeps (found pathways of the embedded toys).
        self.recipe, self.loaded, self.seed = recipe.for_model(loaded.model_id), loaded, seed
        self.decode = Decoder(loaded)
        dims = ("condition",)
        self.schema = Schema(
            {
                **CLEAN_VARIABLES,
                **answer_variables(dims),
                # Two shares of edges kept (flowtrace.tokens.edge_share): flowtrace's, from the
                # first
                # video token on, and the paper's over all causal pairs (its attention_amount),
                # with that denominator so shares pool over samples as the reference pools them.
                "edges_kept_pct": Variable(dims, "float32", np.nan),
                "paper_kept_pct": Variable(dims, "float32", np.nan),
                "attention_pairs": Variable((), "float64", np.nan),
            },
            {"condition": self.CONDITIONS},
        )
        self.attrs = {"edges_kept_measures": EDGE_MEASURES}

    def plan(
        self, prepared: Prepared, sample: Sample, clean: Clean, engine: ReferenceEngine
    ) -> Plan:
        layout, layers = prepared.layout, self.loaded.num_layers
        counted = counted_edges(layout)
        pathway = self.recipe.plan(layout, layers)
        if self.recipe.random_ratio is None:
            budget = {layer: int((cut & counted).sum()) for layer, cut in pathway.items()}
        else:
            n = int(self.recipe.random_ratio * int(counted.sum()))
            budget = dict.fromkeys(range(layers), n)
        # Seeded by the run seed and the sample, so a rerun draws the same random cuts.
        seed = zlib.crc32(f"{self.seed}/{sample.id}".encode())
        random = random_plan(counted, budget, torch.Generator().manual_seed(seed))
        plans = (pathway, random)
        kept = [kept_shares(plan, counted, layers) for plan in plans]
        return Plan([KnockoutCondition(p) for p in plans], kept, fill_runs_model=False)

    def fill(self, step: Step) -> None:
        clean, record, plan, probs = step.clean, step.record, step.plan, step.probs
        at = (np.arange(len(self.CONDITIONS)),)
        record_answers(record, at, probs, clean, self.decode)
        ours, paper = zip(*plan.context, strict=True)
        record.values["edges_kept_pct"][:] = ours
        record.values["paper_kept_pct"][:] = paper
        pairs = causal_pairs(step.prepared.layout.seq_len) * self.loaded.num_layers
        record.values["attention_pairs"][()] = pairs
