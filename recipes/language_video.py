"""Language and video: the "language-to-video knockout" of "An Empirical Study on How Video-LLMs
Answer Video Questions" (arXiv 2508.15360), and its reverse.

Labels follow flowtrace's `source -> target` (information flows from source to target; queries
in target may not attend to keys in source):

- `video -> language`: the text after the video (question, options, prompt tail, last token)
  may not attend to any video token. This is the study's language-to-video knockout, named
  there by the attention's direction (text queries attending to video keys). The few tokens
  between the video and the question ("USER:") belong to no group and are left uncut.
- `language -> video`: video tokens may not attend to the text before them (the system prompt).

The study finds that video question answering relies more on this language-guided retrieval
than on self-attention among video tokens (recipes/cross_frame.py, recipes/within_frame.py).
Windows by default; the study's cutoff setting with `--window-style top_down`.
"""

from flowtrace.recipe import Knockout

recipe = Knockout(
    name="language_video",
    title="Language and video: text may not read video, video may not read earlier text",
    edges={
        "video -> language": "video -> query, prompt_tail, last",
        "language -> video": "system -> video",
    },
)
