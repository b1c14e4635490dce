"""Logit lens on video tokens (Map the Flow, §5).

What does each video token "say" at each layer? Every video token's residual stream is unembedded
through the final norm and the LM head; the cube keeps the top-k words per (layer, frame, h, w).
The figure writes the top-1 word on each token's patch of the frame for a few layers, and shows
which words dominate per layer (the paper finds temporal and object words emerging in video tokens
in the middle layers).
"""

from flowtrace.recipe import VideoLogitLens

recipe = VideoLogitLens(
    name="logit_lens",
    title="Logit lens on video tokens: top-1 word per token and layer",
    top_k=3,
)
