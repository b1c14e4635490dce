"""The flow map (recipes/flow_map.py) written out as a trace program.

The same store as the declared recipe (tests/test_programs_as_kinds.py holds them equal): every
ordered pair of token groups, source before target, cut in the window of layers around each
position of the run's sweep. Options span the most any sample of the data has; a sample with
fewer leaves its missing options' cells empty.
"""

import numpy as np

from flowtrace.interventions import Cut
from flowtrace.program import Trace, TraceProgram


def flow_map(t: Trace):
    letters = max((s.option_letters() for s in t.others), key=len)
    groups = ["system", *t.frame_groups, "question", *(f"option_{x}" for x in letters)]
    groups += ["prompt_tail", "last"]
    order = {group: i for i, group in enumerate(groups)}

    def edge(source, target):  # an edge of the map, which this sample has
        present = source in t.layout.groups and target in t.layout.groups
        return f"{source} -> {target}" if present and order[source] < order[target] else None

    def cut(layer, source, target):
        expression = edge(source, target)
        return None if expression is None else Cut(expression, t.window(layer))

    sources, targets = groups[:-1], groups[1:]
    out = yield t.grid(cut, layer=t.sweep_layers, source=sources, target=targets)
    blocked = [[t.blocked(edge(s, g)).sum() if edge(s, g) else np.nan for g in targets]
               for s in sources]  # fmt: skip
    return {**t.answer_changes(out), "blocked_edges": (("source", "target"), blocked)}


recipe = TraceProgram(
    name="flow_map",
    title="Flow map: the answer's dependence on every group-to-group edge, layer by layer",
    program=flow_map,
    chart="FlowMap",
)
