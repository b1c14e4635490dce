"""Fixtures: a tiny random LLaVA-NeXT-Video saved like a real checkpoint, and a tiny dataset.

Also: an unexpected fast-engine fall-back fails the test, and the slow tests are marked `slow`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowtrace.data import read_samples, synth
from flowtrace.models.prompt_template import EVAL_MVBENCH

ROOT = Path(__file__).resolve().parents[1]

# Tests that took more than about 8 s with --durations on this 2-core machine shared with other
# jobs (a test's parameters counted together), by file (every test in it) or by node id (a test
# and all its parameters, or one parameter). `pytest -m "not slow"` runs the rest.
SLOW_FILES = {
    "test_benchmarks.py",  # the full-size adapters benchmark at its tiny shape
    "test_half_precision.py",  # bf16 matmuls on CPU
    "test_planted_trained.py",  # module fixtures sweep the trained planted model
    "test_resume.py",  # kills a run in a subprocess and resumes it
    "test_window_styles.py",
}
SLOW_TESTS = {
    "tests/test_adapters.py::test_changing_one_frame_changes_exactly_its_group",
    "tests/test_attribution.py::test_ranking_of_head_cells_agrees_with_exact_knockout",
    "tests/test_bad_inputs.py::test_two_quick_ctrl_cs_keep_the_sample_and_print_the_resume_command",
    "tests/test_bad_inputs.py::test_a_resume_after_an_annotation_edit_is_refused_and_the_store_kept",
    "tests/test_adapters.py::test_cross_frame_knockout_matches_plain_forward",
    "tests/test_adapters.py::test_fast_engine_equals_reference",
    "tests/test_adapters.py::test_generation_under_knockout_matches_plain_greedy_decoding",
    "tests/test_cli.py::test_bad_input_is_one_clear_line",
    "tests/test_cli.py::test_default_run_on_four_samples",
    "tests/test_cli.py::test_notebook_api",
    "tests/test_cli.py::test_query_selects_averages_and_joins_stores",
    "tests/test_cli.py::test_show_and_plot_read_the_store_alone",
    "tests/test_engine.py::test_nnsight_knockout_matches_plain_pytorch",
    "tests/test_errors.py::test_error_case[hub offline]",
    "tests/test_errors.py::test_error_case[resume past bad entries]",
    "tests/test_fast_engine.py::test_every_knockout_recipe_matches_reference",
    "tests/test_fast_engine.py::test_falls_back_to_reference_when_the_model_breaks_causality",
    "tests/test_fast_engine.py::test_head_level_knockouts_match_plain_pytorch",
    "tests/test_flow_map.py::test_flow_map_cells_are_plain_knockouts",
    "tests/test_heads.py::test_head_cells_are_plain_per_head_knockouts",
    "tests/test_outputs.py::test_a_kill_during_a_report_or_figure_write_leaves_the_old_file_whole",
    "tests/test_outputs.py::test_a_store_names_model_recipe_and_data_in_the_home_folder_as_tilde",
    "tests/test_open_ended.py::test_open_ended_probability_is_the_reference_answers_first_token",
    "tests/test_planted.py::test_fast_engine_equals_reference_on_planted_model",
    "tests/test_planted.py::test_control_cut_clips_train_under_the_cross_frame_knockout",
    "tests/test_planted.py::test_forbidden_edges_change_nothing",
    "tests/test_planted.py::test_training_can_start_from_a_trained_checkpoint",
    "tests/test_planted.py::test_training_under_the_plant_writes_a_planted_checkpoint",
    "tests/test_planted.py::test_worker_processes_make_the_same_batches",
    "tests/test_probe.py::test_gen_prob_cube_and_eval_only",
    "tests/test_results.py::test_the_index_headline_is_what_the_store_says",
    "tests/test_scale.py::test_a_bad_option_stops_a_ray_run_with_one_clear_error",
    "tests/test_scale.py::test_every_recipe_gives_the_local_cube_through_a_simulated_server",
    "tests/test_scale.py::test_killed_workers_lose_no_sample_and_resume_still_holds",
    "tests/test_scale.py::test_ray_run_equals_the_serial_run",
    "tests/test_store.py::test_kills_during_flushes_lose_nothing_and_repeat_nothing",
    "tests/test_store.py::test_readers_polling_during_a_run_always_see_whole_samples",
}


def pytest_configure(config: pytest.Config) -> None:
    # Here rather than in pyproject's filterwarnings: see the comment there.
    config.addinivalue_line("filterwarnings", "error::flowtrace.engine.fast.FastEngineFallback")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::")[0]
        base = item.nodeid.split("[")[0]
        if Path(path).name in SLOW_FILES or base in SLOW_TESTS or item.nodeid in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def fresh_self_check():
    """Each test confirms its own shortcuts: the fast engine shares confirmed kinds across the
    engines of one model in a process, and tests break shortcuts on purpose."""
    from flowtrace.engine.fast import VERIFIED

    VERIFIED.clear()
    yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("data"), n_per_task=2, seed=7)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """Random weights in the toy's architecture, saved with save_pretrained (a local checkpoint)."""
    from transformers import LlavaNextVideoForConditionalGeneration

    from flowtrace.toy.build import build_config, build_processor, build_tokenizer

    prompts = [EVAL_MVBENCH.render(s, "<video>").text for s in read_samples(tiny_data)]
    tokenizer = build_tokenizer(prompts)
    config = build_config(tokenizer, layers=4, hidden=64, heads=4, vision_hidden=32)
    torch.manual_seed(0)
    model = LlavaNextVideoForConditionalGeneration(config)
    # Random init leaves the answer distribution flat; scale the head so knockouts move it.
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    return out
