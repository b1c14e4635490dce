"""Within-frame knockout: the "video spatial knockout" of "An Empirical Study on How Video-LLMs
Answer Video Questions" (arXiv 2508.15360).

Does a frame's content need its own tokens to exchange information? In a window of layers every
video token of frame t is forbidden to attend to the earlier tokens of frame t; it keeps its own
key and every other key (other frames, the system prompt). With cross-frame knockout (the
study's "temporal" cut, recipes/cross_frame.py) it separates self-attention among video tokens
into its spatial and temporal parts. The study finds both matter less than language attending to
video (recipes/language_video.py).

Windows: `flowtrace run recipes/within_frame.py` (the window centred on each layer); the study's
cutoff setting, cut from a layer to the last: `--window-style top_down`.
"""

from flowtrace.recipe import Knockout

recipe = Knockout(
    name="within_frame",
    title="Within-frame knockout: video tokens of frame t may not attend to earlier tokens of t",
    edges={"same_frame -> frame": "earlier frame[t] -> frame[t]"},
)
