"""Knockout and flow map: the answer under each edge cut at each sweep step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowtrace.data import Sample, SampleError
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
    Knockout,
)
from flowtrace.models import LoadedModel, Prepared
from flowtrace.store.cube import CLEAN_VARIABLES, Schema, Variable
from flowtrace.tokens.sweep import Sweep


class KnockoutMeasure:
    """Probabilities of the clean answer and the true letter under each knockout and window."""

    def __init__(self, recipe: Knockout, loaded: LoadedModel, sweep: Sweep) -> None:
        """`sweep`: where each knockout cuts (its window, positions and heads); each head alone
        (`sweep.per_head`) gives the cube a `head` dim."""
        self.recipe, self.loaded = recipe, loaded
        self.sweep, self.per_head = sweep, sweep.per_head
        self.generate = recipe.generate
        labels = recipe.labels()
        self.sources = list(dict.fromkeys(s for s, _ in labels))
        self.targets = list(dict.fromkeys(t for _, t in labels))
        self.decode = Decoder(loaded)
        head = ("head",) if self.per_head else ()
        dims = ("layer", *head, "source", "target")
        coords: dict[str, Sequence[object]] = {
            "layer": np.arange(loaded.num_layers),
            "source": self.sources,
            "target": self.targets,
        }
        if self.per_head:
            coords["head"] = np.arange(loaded.num_heads)
        variables = {**CLEAN_VARIABLES, **answer_variables(dims)}
        if self.generate:
            variables["clean_text"] = Variable((), "str", "")
            variables["new_text"] = Variable(dims, "str", "")
        # Missing (NaN) where the sample was not analysed: 0 would read as "nothing cut".
        variables["blocked_edges"] = Variable(("source", "target"), "float64", np.nan)
        self.schema = Schema(variables, coords)

    def plan(
        self, prepared: Prepared, sample: Sample, clean: Clean, engine: ReferenceEngine
    ) -> Plan:
        layout = prepared.layout
        absent = [] if self.recipe.skip_absent else self.recipe.absent_groups(layout)
        if absent:
            why = " (an open-ended prompt shows no options)" if not layout.option_letters else ""
            raise SampleError(
                f"this sample's prompt has no group {', '.join(absent)}, which the recipe's "
                f"edges name{why}"
            )
        conditions = self.recipe.conditions(
            layout, self.loaded.num_layers, self.sweep, self.loaded.num_heads
        )
        # Replies run their own batched generation; first-token knockouts join the pass's batch.
        knockouts = [] if self.generate else [c.knockout for c in conditions]
        return Plan(knockouts, conditions, fill_runs_model=bool(self.generate))

    def fill(self, step: Step) -> None:
        record, probs = step.record, step.probs
        conditions = step.plan.context
        if not conditions:
            return
        if self.generate:
            # The clean reply comes first, as one more row of the same batched generation.
            probs, ids = step.engine.generate(
                step.prepared.inputs,
                [KnockoutCondition({}), *(c.knockout for c in conditions)],
                self.generate,
                self.loaded.stop_ids(),
            )
            texts = [self.loaded.reply(row) for row in ids.tolist()]
            record.values["clean_text"][()] = texts.pop(0)
            probs = probs[1:]
        sources = [self.sources.index(c.source) for c in conditions]
        targets = [self.targets.index(c.target) for c in conditions]
        layers = [c.layer for c in conditions]
        head = ([c.heads[0] for c in conditions],) if self.per_head else ()
        at = (layers, *head, sources, targets)
        record_answers(record, at, probs, step.clean, self.decode)
        if self.generate:
            record.values["new_text"][at] = np.asarray(texts, dtype=object)
        record.values["blocked_edges"][sources, targets] = [c.edges for c in conditions]
