"""Mean ablation of each frame's MLP output at each layer: p(answer) and whether it flips.

Each frame's MLP output at one layer is replaced by its mean over the same prompt with other
videos of the data (four donors, fixed by the seed and the sample), one (layer, frame) at a time.
"""

from flowtrace.interventions import Ablate
from flowtrace.program import Trace, TraceProgram


def frame_mlp_ablation(t: Trace):
    ablated = t.run(
        t.grid(
            lambda layer, frame: Ablate("mlp", frame, layer, how="mean"),
            layer=range(t.num_layers),
            frame=t.frame_groups,
        )
    )
    return {"p_answer": ablated.p(t.answer_id), "flipped": ablated.flips(t.answer_id)}


recipe = TraceProgram(
    "frame_mlp_ablation",
    "One frame's MLP output mean-ablated at one layer: p(answer), flips",
    frame_mlp_ablation,
)
