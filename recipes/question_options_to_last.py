"""Question and options to the last token (Map the Flow, §4.2).

Which parts of the text does the last token read the answer from? The question without its
options, the true option, or the false options — each cut from the last token in a window of
layers. The paper finds the true option's flow to the last token decisive in middle-late layers.
"""

from flowtrace.recipe import Knockout

recipe = Knockout(
    name="question_options_to_last",
    title="Question (no options), true option, false options -> last token",
    edges={
        "question -> last": "question -> last",
        "true_option -> last": "true_option -> last",
        "false_options -> last": "false_options -> last",
    },
)
