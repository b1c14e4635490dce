"""Heads that carry time: every head scored by the effect of cutting cross-frame attention in
it alone, in one layer (CircuitProbe, arXiv 2507.19420, scores temporal heads; Map the Flow §4.1
cuts cross-frame attention in every head).

For each (layer, head), video tokens of frame t may not attend to frames < t in that head of that
layer only; p(answer) and its relative change (%) say how much the head carries between frames.
The same cells as `flowtrace run cross_frame --heads sweep --window 1`, fixed here so the recipe
cannot run with another window. The heads with the largest drops are the ones to amplify with
recipes/steer_heads.py.
"""

from flowtrace.interventions import Cut
from flowtrace.program import Trace, TraceProgram

CROSS_FRAME = "frame[<t] -> frame[t]"


def temporal_heads(t: Trace):
    cut = t.run(
        t.grid(
            lambda layer, head: Cut(CROSS_FRAME, layer, heads=[head]),
            layer=range(t.num_layers),
            head=range(t.loaded.num_heads),
        )
    )
    p = cut.p(t.answer_id)
    clean = float(t.clean_probs[t.answer_id])
    return {
        "p_answer": p,  # layer × head
        "rel_change": 100 * (p - clean) / clean,  # % of the clean p(answer); negative: it helped
        "flipped": cut.flips(t.answer_id),
    }


recipe = TraceProgram(
    "temporal_heads",
    "Cross-frame attention cut in one head of one layer: p(answer) change per head",
    temporal_heads,
)
