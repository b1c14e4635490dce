"""Attention maps between token groups (Map the Flow, §4).

Where does each group's attention go, layer by layer and head by head, and how does cutting
cross-frame attention reroute it? The mass a query of the target group puts on the keys of the
source group (averaged over the target's queries) is reduced inside the trace, for the clean pass
and with frame t ↛ frames < t cut in every layer. Runs with eager attention (for the weights).
"""

from flowtrace.recipe import AttentionMap

recipe = AttentionMap(
    name="attention_map",
    title="Attention mass between token groups: clean vs cross-frame blocked",
    blocked="frame[<t] -> frame[t]",
)
