"""Counterfactual patching: what each token group carries, layer by layer.

The clean video and three counterfactuals of it: frames reversed, frames shuffled (seeded), one
frame replaced by another video's (a donor fixed by the seed and the sample). For each
counterfactual, each site (a layer's residual stream, its attention output), each layer and each
token group, the group's activation is patched from the counterfactual run into the clean run.
Recorded: p(clean answer), p(the counterfactual's own answer), whether the answer flips, and how
each counterfactual was made. A counterfactual equal to the clean video (a static clip reversed)
is marked and left out of flip rates. Knockout says a pathway is needed; patching says what it
carries: a group whose patch flips the answer carries the information the counterfactual changed.
"""

import xarray as xr

from flowtrace.interventions import Patch
from flowtrace.patching import COUNTERFACTUALS, counterfactual
from flowtrace.program import Trace, TraceProgram

SITES = ("residual", "attention")


def counterfactual_patch(t: Trace):
    groups = [*t.frame_groups, "video", "query", "question", "options", "last"]
    measured, made, answers = [], [], []
    for name in COUNTERFACTUALS:
        cf = counterfactual(t, name)
        run = t.capture(cf.frames)  # every layer's activations under the counterfactual video
        answer = int(run.probs.argmax())
        patched = t.run(
            t.grid(
                lambda site, layer, group, run=run: Patch(site, group, layer, source=run),
                site=SITES,
                layer=range(t.num_layers),
                group=groups,
            )
        )
        p_clean, p_cf = patched.p(t.answer_id), patched.p(answer)
        flipped = patched.flips(t.answer_id)
        measured.append(
            xr.Dataset(
                {"p_clean_answer": p_clean, "p_counterfactual_answer": p_cf, "flipped": flipped}
            )
        )
        made.append(cf)
        answers.append(t.loaded.decode(answer))
    cube = xr.concat(measured, dim="counterfactual").assign_coords(
        counterfactual=list(COUNTERFACTUALS)
    )
    return {
        **{name: cube[name] for name in cube.data_vars},
        "counterfactual_answer": (("counterfactual",), answers),
        "frame_order": (("counterfactual", "frame"), [cf.order for cf in made]),
        "swapped_frame": (("counterfactual",), [cf.swapped_frame for cf in made]),
        "donor": (("counterfactual",), [cf.donor for cf in made]),
        "same_as_clean": (("counterfactual",), [cf.same_as_clean for cf in made]),
    }


recipe = TraceProgram(
    name="counterfactual_patch",
    title="Counterfactual patching: p(clean answer) with one group patched from a counterfactual",
    program=counterfactual_patch,
    chart="counterfactual_patch",
)
