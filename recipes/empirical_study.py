"""The knockouts of "An Empirical Study on How Video-LLMs Answer Video Questions" (arXiv
2508.15360, CVPR 2026) in one pass: video temporal (cross-frame), video spatial (within-frame),
language-to-video and its reverse.

The study runs each cut over windows of layers (its fine-grained setting) and from a cutoff layer
to the last (its global setting). flowtrace's window styles say both:

    flowtrace run recipes/empirical_study.py --out runs/study/windows
    flowtrace run recipes/empirical_study.py --window-style top_down --out runs/study/cutoff

Each run writes DIR/combined.png, a panel per cut. Beside Map the Flow's four sweeps
(recipes/paper.py) for one model: recipes/both_studies.py in one pass, or stores of separate runs
with `flowtrace plot runs/paper/*.zarr runs/study/windows/*.zarr --combined`.
"""

recipes = ["cross_frame.py", "within_frame.py", "language_video.py"]
