"""The full flow map: every ordered pair of token groups, at every layer window (beyond the paper).

The paper's sweeps cut a few chosen edges (frames ↛ later frames, video ↛ question, question ↛
last, …). This cuts every pair — system, each frame, the question, each option, the prompt tail
and the last token; source before target — so the sweeps become slices of one
layer × source × target cube, and edges nobody thought to test show up too. The figure has a layer
slider over a source × target heatmap; click a cell for its layer curve.

It is the costliest recipe: about 730 knockouts per toy sample (about 30 s on two CPU cores), so
start with `--limit`. `flowtrace pathways` derives effective pathways from its store.
"""

from flowtrace.recipe import FlowMap

recipe = FlowMap(
    name="flow_map",
    title="Flow map: the answer's dependence on every group-to-group edge, layer by layer",
)
