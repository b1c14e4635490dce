"""Video and question to the true option (Map the Flow, §4.2).

Does the true option's text gather video and question information before the last token reads
it? Three knockouts: video ↛ question (without options), question ↛ true option, video ↛ true
option.
"""

from flowtrace.recipe import Knockout

recipe = Knockout(
    name="vq_to_true_option",
    title="Video and question -> true option",
    edges={
        "video -> question": "video -> question",
        "question -> true_option": "question -> true_option",
        "video -> true_option": "video -> true_option",
    },
)
