"""Both published knockout studies of video LLMs in one pass: Map the Flow's four sweeps
(recipes/paper.py) and the empirical study's within-frame and language/video cuts
(recipes/empirical_study.py; its temporal cut is Map the Flow's cross-frame sweep, run once).
Each video is decoded once and its clean pass run once; each recipe writes its own store.
"""

recipes = [
    "cross_frame.py",
    "vql_to_ql.py",
    "question_options_to_last.py",
    "vq_to_true_option.py",
    "within_frame.py",
    "language_video.py",
]
