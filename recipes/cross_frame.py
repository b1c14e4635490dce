"""Cross-frame knockout (Map the Flow, §4.1).

Does temporal reasoning need video tokens to exchange information across frames? At a window of
layers, every video token of frame t is forbidden to attend to the tokens of all earlier frames
(frame t ↛ frames < t); we slide the window over the layers and measure how much the probability
of the model's answer drops. The paper finds the drop concentrated in early-to-middle layers.
"""

from flowtrace.recipe import Knockout

recipe = Knockout(
    name="cross_frame",
    title="Cross-frame knockout: video tokens of frame t may not attend to frames < t",
    edges={"earlier_frames -> frame": "frame[<t] -> frame[t]"},
)
