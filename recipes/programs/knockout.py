"""Any knockout recipe's edges written out as a trace program: here vql_to_ql's.

The same store as recipes/vql_to_ql.py (tests/test_programs_as_kinds.py holds them equal). Each
labelled edge "source -> target" is cut in the window of layers around each position of the
run's sweep; the grid spans every source and target, and a pair that is not an edge is left
empty (None: not run, read as missing). Edit EDGES to knock out other edges.
"""

import numpy as np

from flowtrace.interventions import Cut
from flowtrace.program import Trace, TraceProgram

EDGES = {
    "video -> question": "video -> query",
    "video -> last": "video -> last",
    "question -> last": "query -> last",
    "last -> last": "last -> last",
}


def knockout(t: Trace):
    cuts = {tuple(label.split(" -> ")): expression for label, expression in EDGES.items()}
    sources = list(dict.fromkeys(source for source, _ in cuts))
    targets = list(dict.fromkeys(target for _, target in cuts))

    def cut(layer, source, target):
        expression = cuts.get((source, target))
        return None if expression is None else Cut(expression, t.window(layer))

    out = yield t.grid(cut, layer=t.sweep_layers, source=sources, target=targets)
    blocked = [[t.blocked(cuts[s, g]).sum() if (s, g) in cuts else np.nan for g in targets]
               for s in sources]  # fmt: skip
    return {**t.answer_changes(out), "blocked_edges": (("source", "target"), blocked)}


recipe = TraceProgram(
    name="vql_to_ql",
    title="Video, question and last token: which flows carry the answer?",
    program=knockout,
    chart="Knockout",
)
