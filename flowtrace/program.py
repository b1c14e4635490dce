"""Recipes as trace programs: a function of one sample's `Trace` that returns named arrays.

A program states interventions in the vocabulary of `flowtrace.interventions` and runs them with
one call; the pass's engine batches them and recomputes only what each changes:

    def ablate(t: Trace):
        out = t.run(t.grid(lambda layer, group: Ablate("residual", group, layer),
                           layer=range(t.num_layers), group=["video", "last"]))
        return {"p_answer": out.p(t.answer_id)}

    recipe = TraceProgram("my_analysis", "What my analysis shows", ablate)

Plain nnsight traces (`with t.model.trace(**t.inputs): …`) stay possible for anything the
vocabulary does not say. The runner gives a program what the built-in kinds get: data, sample
modes, prefetch, a store with resume and provenance, `show`/`query`/`plot` with a figure chosen
from the dims. docs/programs.md is the guide.
"""

from flowtrace.kinds.declarations import TraceProgram
from flowtrace.kinds.trace import MEAN_DONORS, Trace

__all__ = ["MEAN_DONORS", "Trace", "TraceProgram"]
