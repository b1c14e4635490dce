"""Layer-wise answer probability (Map the Flow, §5).

From which layer can the answer be read off the last token? At every layer, the last token's
residual stream is unembedded (logit lens, with and without the final norm) and we record the
probability of the true option's letter against the false ones, and the top tokens. The paper
finds the true letter rising right after the middle layers, where video-language integration ends.
"""

from flowtrace.recipe import LayerProbe

recipe = LayerProbe(
    name="gen_prob",
    title="Layer-wise probability of the true vs false option letters (logit lens, last token)",
    top_k=5,
)
