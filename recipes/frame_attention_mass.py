"""Per-frame attention mass: how much the last token and the query attend to each frame, per
layer, averaged over heads, with the dominant ("anchor") frame of each layer marked.

A trace program reading attention weights: `t.attention_mass` computes them under any attention
implementation (it runs its one forward with eager attention), so the run needs no --attn.
"""

from flowtrace.program import Trace, TraceProgram


def frame_attention_mass(t: Trace):
    mass = t.attention_mass(targets=["last", "query"], sources=t.frame_groups).mean("head")
    per_frame = mass.rename(source="frame")
    return {
        "attention_mass": per_frame,  # layer × target × frame
        "anchor_frame": per_frame.argmax("frame"),  # layer × target: the frame with most mass
    }


recipe = TraceProgram(
    "frame_attention_mass",
    "Attention mass of the last token and the query on each frame, per layer",
    frame_attention_mass,
)
