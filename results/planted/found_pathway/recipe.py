"""Effective pathway of the planted model, found by search (flowtrace.pathways.discovery).

152 of 624 (layer, source, target) cells are kept,
every other counted edge is cut. Searched on 16 samples, its length selected on 128 others;
test split (128 samples neither saw): 99.2% accuracy (clean 100.0%)
with 24.5% of edges kept; random cuts of the same per-layer budget: 44.7%
(min 34.4, max 54.7, 4 seeds). Regenerate with
`flowtrace pathways FLOW_MAP --find`; edit the layers to try others.
The select and test splits are fresh synthetic samples (flowtrace.data.synth), seeds 40001 and
40004, none used for training or the embedded held-out set; regenerate with
`flowtrace pathways FLOW_MAP --find --fresh-select 32 --fresh-test 32`.
"""

from flowtrace.recipe import EffectivePathway

recipe = EffectivePathway(
    name='found_pathway',
    title='Found effective pathway of planted: 152 cells kept',
    description='found by flowtrace.pathways.discovery: searched on 16 samples, length selected on 128 others (repair rule, min_ratio 0.5, at most 0 failing); test split (128 more): 99.2% with 24.5% of edges kept',
    cut_rest=True,  # every counted edge not listed (in its layers) is cut
    pathways={
        'frame_0_to_frame_0': ('frame_0 -> frame_0', [0, 2]),
        'frame_0_to_frame_1': ('frame_0 -> frame_1', [0, 1, 2]),
        'frame_0_to_frame_2': ('frame_0 -> frame_2', [0, 1, 2]),
        'frame_0_to_frame_3': ('frame_0 -> frame_3', [0, 1]),
        'frame_0_to_frame_4': ('frame_0 -> frame_4', [0, 1, 2]),
        'frame_0_to_frame_5': ('frame_0 -> frame_5', [0, 1, 2]),
        'frame_0_to_frame_6': ('frame_0 -> frame_6', [0, 1, 2]),
        'frame_0_to_frame_7': ('frame_0 -> frame_7', [0, 1, 2, 3]),
        'frame_1_to_frame_1': ('frame_1 -> frame_1', [0, 2]),
        'frame_1_to_frame_2': ('frame_1 -> frame_2', [0, 1, 2]),
        'frame_1_to_frame_3': ('frame_1 -> frame_3', [0]),
        'frame_1_to_frame_4': ('frame_1 -> frame_4', [1, 2]),
        'frame_1_to_frame_5': ('frame_1 -> frame_5', [0, 1, 2]),
        'frame_1_to_frame_6': ('frame_1 -> frame_6', [0, 1]),
        'frame_1_to_frame_7': ('frame_1 -> frame_7', [0, 1, 2, 3]),
        'frame_2_to_frame_2': ('frame_2 -> frame_2', [0, 2]),
        'frame_2_to_frame_3': ('frame_2 -> frame_3', [0, 1]),
        'frame_2_to_frame_4': ('frame_2 -> frame_4', [0, 1, 2]),
        'frame_2_to_frame_5': ('frame_2 -> frame_5', [0, 1, 2]),
        'frame_2_to_frame_6': ('frame_2 -> frame_6', [0, 1]),
        'frame_2_to_frame_7': ('frame_2 -> frame_7', [0, 1, 2, 3]),
        'frame_3_to_frame_3': ('frame_3 -> frame_3', [0]),
        'frame_3_to_frame_4': ('frame_3 -> frame_4', [0, 1, 2]),
        'frame_3_to_frame_5': ('frame_3 -> frame_5', [0, 1, 2]),
        'frame_3_to_frame_6': ('frame_3 -> frame_6', [0]),
        'frame_3_to_frame_7': ('frame_3 -> frame_7', [0, 1, 2, 3]),
        'frame_4_to_frame_4': ('frame_4 -> frame_4', [0, 2]),
        'frame_4_to_frame_5': ('frame_4 -> frame_5', [0, 1, 2]),
        'frame_4_to_frame_6': ('frame_4 -> frame_6', [0, 1, 2]),
        'frame_4_to_frame_7': ('frame_4 -> frame_7', [0, 1, 2, 3]),
        'frame_5_to_frame_5': ('frame_5 -> frame_5', [0, 2]),
        'frame_5_to_frame_6': ('frame_5 -> frame_6', [0, 1, 2]),
        'frame_5_to_frame_7': ('frame_5 -> frame_7', [0, 1, 2, 3]),
        'frame_6_to_frame_6': ('frame_6 -> frame_6', [0]),
        'frame_6_to_frame_7': ('frame_6 -> frame_7', [0, 2, 3]),
        'frame_7_to_frame_7': ('frame_7 -> frame_7', [0, 2, 3, 4]),
        'frame_7_to_query': ('frame_7 -> query', [2, 3, 4, 5]),
        'last_to_last': ('last -> last', [0, 1, 2, 3, 6, 7]),
        'prompt_tail_to_last': ('prompt_tail -> last', [0, 1, 2, 3, 5, 6, 7]),
        'prompt_tail_to_prompt_tail': ('prompt_tail -> prompt_tail', [0, 1, 4]),
        'query_to_last': ('query -> last', [4, 5, 6, 7]),
        'query_to_query': ('query -> query', [0, 1, 2, 3, 4, 5, 6]),
        'separators_to_last': ('separators -> last', [0, 1, 2, 3, 4, 5, 7]),
        'separators_to_prompt_tail': ('separators -> prompt_tail', [0, 1, 3, 4]),
        'separators_to_query': ('separators -> query', [0, 1, 2, 3, 4, 5, 6]),
        'separators_to_separators': ('separators -> separators', [0, 1, 2, 3, 4, 5]),
    },
)
