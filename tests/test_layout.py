"""TokenLayout on the toy processor: every group decodes back to the text or frames it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flowtrace.data import read_frames, read_samples
from flowtrace.models import load_model
from flowtrace.models.prompt_template import SYSTEM_MVBENCH


def squash(text: str) -> str:
    return "".join(text.split())


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


def test_text_groups_decode_to_their_prompt_parts(loaded, tiny_data: Path):
    for sample in read_samples(tiny_data):
        prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
        ids = prepared.inputs["input_ids"][0]
        layout = prepared.layout

        def text(name: str, ids=ids, layout=layout) -> str:
            return squash(loaded.tokenizer.decode(ids[layout[name]]))

        letters = sample.option_letters()
        options = [f"({x}){c}" for x, c in zip(letters, sample.candidates, strict=True)]
        assert layout.seq_len == ids.shape[0]
        assert text("system") == squash("<s>" + SYSTEM_MVBENCH + "USER:")
        assert text("question") == squash(sample.question)
        for letter, option in zip(letters, options, strict=True):
            assert text(f"option_{letter}") == squash(option)
        true = letters[sample.candidates.index(sample.answer)]
        assert text("true_option") == squash(f"({true}){sample.answer}")
        false = [o for x, o in zip(letters, options, strict=True) if x != true]
        assert text("false_options") == squash("".join(false))
        assert text("query") == squash(
            "Question:" + sample.question + "Options:" + "".join(options)
        )
        assert text("prompt_tail") == squash("Only give the best option. ASSISTANT:Best option:")
        assert text("last") == "("
        assert int(layout["last"][0]) == ids.shape[0] - 1
        video = ids[layout["video"]]
        assert bool((video == loaded.processor.video_token_id).all())
        assert len(layout["video"]) == 8 * 4 * 4


def test_frame_groups_hold_their_own_frame(loaded, tiny_data: Path):
    """The embeddings at frame_t's positions are the features of frame t alone."""
    sample = read_samples(tiny_data, tasks=["Moving Direction"])[0]
    prepared = loaded.adapter.prepare(loaded, sample, read_frames(sample.video, 8))
    model = loaded.model
    captured = {}

    def grab(module, args, kwargs):
        captured["embeds"] = kwargs["inputs_embeds"][0]

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(**prepared.inputs)
    handle.remove()
    pixels = prepared.inputs["pixel_values_videos"]
    for t in range(8):
        with torch.no_grad():
            alone = model.model.get_video_features(
                pixel_values_videos=pixels[:, t : t + 1],
                vision_feature_layer=model.config.vision_feature_layer,
                vision_feature_select_strategy=model.config.vision_feature_select_strategy,
            ).pooler_output[0]
        at = captured["embeds"][prepared.layout[f"frame_{t}"]]
        assert torch.allclose(at, alone, atol=1e-5)
    grid = prepared.layout.video_positions()
    assert grid.shape == (8, 4, 4)
    assert (grid[1].ravel() == prepared.layout["frame_1"]).all()
