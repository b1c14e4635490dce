"""Counterfactual patching: what each token group carries, layer by layer.

The clean video and three counterfactuals of it: frames reversed, frames shuffled (seeded), one
frame replaced by another video's. For each counterfactual, each site (a layer's residual stream,
its attention output), each layer and each token group, the group's activation is patched from
the counterfactual run into the clean run. Recorded: p(clean answer), p(the counterfactual's own
answer), and whether the answer flips. Each patch recomputes only the positions and layers it can
change (flowtrace.patching.patched_fast), so it runs where the model does, not on a trace server.
Knockout says a pathway is needed; patching says what it
carries: a group whose patch flips the answer carries the information the counterfactual changed.
"""

import torch

from flowtrace.patching import SITES, Patch, capture, counterfactual_frames, patched_fast
from flowtrace.program import Trace, TraceProgram

COUNTERFACTUALS = ("reversed", "shuffled", "frame_swapped")


def groups(t: Trace) -> list[str]:
    frames = sorted(
        (g for g in t.layout.groups if g.startswith("frame_")), key=lambda g: int(g[6:])
    )
    return [*frames, "video", "query", "question", "options", "last"]


def counterfactual_patch(t: Trace):
    names, layers = groups(t), len(t.layers)
    shape = (len(COUNTERFACTUALS), len(SITES), layers, len(names))
    p_clean, p_cf, flips = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape, dtype=bool)
    cf_answers = []
    for c, name in enumerate(COUNTERFACTUALS):
        run = capture(t, t.prepare(counterfactual_frames(t, name)).inputs)
        cf_answer = int(run.probs.argmax())
        cf_answers.append(t.loaded.decode(cf_answer))
        patches = [
            Patch(site, layer, torch.as_tensor(t.layout[group]))
            for site in SITES
            for layer in range(layers)
            for group in names
        ]
        probs = patched_fast(t, run, patches).reshape(len(SITES), layers, len(names), -1)
        p_clean[c], p_cf[c] = probs[..., t.answer_id], probs[..., cf_answer]
        flips[c] = probs.argmax(-1) != t.answer_id
    dims = ("counterfactual", "site", "layer", "group")
    return {
        "p_clean_answer": (dims, p_clean),
        "p_counterfactual_answer": (dims, p_cf),
        "flipped": (dims, flips),
        "counterfactual_answer": (("counterfactual",), cf_answers),
        "coords": {"counterfactual": COUNTERFACTUALS, "site": SITES, "group": names},
    }


recipe = TraceProgram(
    name="counterfactual_patch",
    title="Counterfactual patching: p(clean answer) with one group patched from a counterfactual",
    program=counterfactual_patch,
    chart="counterfactual_patch",
    remote=False,  # patched_fast calls the decoder layers itself
)
