"""Effective pathways (Map the Flow, §6).

Can the model answer with only the pathways the knockouts found, everything else of those kinds
cut? Kept: cross-frame attention among video tokens in early-middle layers, video → question in
early-to-middle layers, question → last in middle-late layers; never kept: video → last and
last → last; video → video and question → question are cut once their phase is over. The ranges
are the paper's LLaVA-NeXT-7B-Video-FT values (layers 6–15, 6–20, 16–25 of 32) as fractions of
the depth; copy this file and edit them for your model. The report: accuracy and the share of
attention edges kept, against random cuts of the same number of edges per layer.

On the embedded toys (`toy`, `planted`) the recipe runs instead the pathway found on each by
search (`flowtrace pathways --find`, docs/pathways.md): results/<model>/found_pathway/recipe.py.
"""

from pathlib import Path

from flowtrace.recipe import EffectivePathway, load_recipe

FOUND = Path(__file__).resolve().parents[1] / "results"
TOYS = ("toy", "planted")

recipe = EffectivePathway(
    name="effective_pathway",
    title="Effective pathways only vs random pruning at the same edge budget",
    pathways={
        "cross_frame": ("frame[<t] -> frame[t]", (5 / 32, 15 / 32)),
        "video_to_question": ("video -> query", (5 / 32, 20 / 32)),
        "question_to_last": ("query -> last", (15 / 32, 25 / 32)),
        "video_to_last": ("video -> last", None),
        "last_to_last": ("last -> last", None),
        "video_to_video": ("video -> video", (0, 20 / 32)),
        "question_to_question": ("query -> query", (0, 25 / 32)),
    },
    per_model={
        model: load_recipe(FOUND / model / "found_pathway" / "recipe.py")
        for model in TOYS
        if (FOUND / model / "found_pathway" / "recipe.py").exists()
    },
)
