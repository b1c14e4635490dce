"""Cross-frame knockout (recipes/cross_frame.py) written out as a trace program.

The same store as the declared recipe (tests/test_programs_as_kinds.py holds them equal): at each
position of the run's layer sweep, video tokens of frame t may not attend to frames < t in the
window's layers; recorded is what the built-in knockouts record of the answer. `yield` hands the
conditions to the pass, which batches them with other recipes' knockouts.
"""

from flowtrace.interventions import Cut
from flowtrace.program import Trace, TraceProgram

EDGE = "frame[<t] -> frame[t]"


def cross_frame(t: Trace):
    out = yield t.grid(
        lambda layer, source, target: Cut(EDGE, t.window(layer)),
        layer=t.sweep_layers,
        source=["earlier_frames"],
        target=["frame"],
    )
    blocked = [[float(t.blocked(EDGE).sum())]]  # (query, key) pairs cut, per source and target
    return {**t.answer_changes(out), "blocked_edges": (("source", "target"), blocked)}


recipe = TraceProgram(
    name="cross_frame",
    title="Cross-frame knockout: video tokens of frame t may not attend to frames < t",
    program=cross_frame,
    chart="Knockout",
)
