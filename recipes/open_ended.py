"""Open-ended answers under knockout (Map the Flow, §4.4: open-ended VideoQA).

For datasets without options (`--data vcgbench:…`, `tvbench-open:…`) the answer is words, not a
letter. Each knockout is swept over layer windows as in the other recipes, and measured two ways:
the probability of the reference answer's first token at the last position (for a prompt that
starts the reply with an answer prompt, e.g. "The number of moving objects is", that is the
answer word), and a greedy reply of up to 32 tokens generated clean and under the knockout (a
generated token is cut from what the last token is cut from), so the text shows what the
knockout did. The edges are the reference code's open-ended ones; the reply so far is the prompt
tail (the answer prompt). Run open-ended data with `--sample-mode all`: "correct" keeps only the
samples whose first token already is the reference answer's.

On multiple-choice data (the default toy split) the same recipe reads the option letter.
"""

from flowtrace.recipe import Knockout

recipe = Knockout(
    name="open_ended",
    title="Open-ended replies: video, question and the reply so far to the last token",
    edges={
        "video -> question": "video -> question",
        "video -> reply": "video -> prompt_tail",
        "video -> last": "video -> last",
        "question -> last": "question -> last",
        "reply -> last": "prompt_tail -> last",
    },
    generate=32,
)
