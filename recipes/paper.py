"""The paper's four knockout sweeps (Map the Flow, §4) in one pass.

`flowtrace run recipes/paper.py` decodes each video once, runs the clean pass once and sends all
four sweeps' conditions through the fast engine together, writing one store per sweep, each the
same as running that recipe alone.
"""

recipes = ["cross_frame.py", "vql_to_ql.py", "question_options_to_last.py", "vq_to_true_option.py"]
