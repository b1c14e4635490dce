"""Video and question to question and last token (Map the Flow, §4.2).

Where does video information meet the question, and when does the question reach the position
where the answer is produced? Four knockouts, each swept over layer windows: video ↛ question
(the whole "Question: … Options: …" block, as the reference code), video ↛ last, question ↛ last,
last ↛ last. The paper finds video → question in early-middle layers, question → last in
middle-late layers, and little direct video → last.
"""

from flowtrace.recipe import Knockout

recipe = Knockout(
    name="vql_to_ql",
    title="Video, question and last token: which flows carry the answer?",
    edges={
        "video -> question": "video -> query",
        "video -> last": "video -> last",
        "question -> last": "query -> last",
        "last -> last": "last -> last",
    },
)
