"""VideoLLaMA3 fed as the reference's VideoLLaMA3 analysis feeds it.

Every expected value is written out by hand from the reference's rules, not computed with
flowtrace: frames `linspace(0, count - 1, 8)` rounded down over the video or its bound; each
frame stamped "Time {t:.1f}s:" with t spread evenly from the span's start to its end; frames
resized keeping the aspect ratio within 12×12 tokens a frame on average, no crop; the video group
everything between the newline after "user" and the newline after the last frame, split into
frames at the commas (the comma before a frame is that frame's).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from adapters_fixtures import build_videollama3, videollama3_ranges

from flowtrace.data import Sample, SampleError, read_samples
from flowtrace.data.synth import write_mp4
from flowtrace.data.video import read_frames, sample_frames
from flowtrace.models import load_model
from flowtrace.models.family_templates import VIDEOLLAMA3_TVBENCH
from flowtrace.models.hf_families import VideoLlama3Adapter
from flowtrace.tokens.edges import blocked_edges

FPS = 10
COUNT = 40  # frames: 4.0 s at 10 fps
HEIGHT, WIDTH = 120, 214  # 16:9-ish, as 480×854 at a quarter of the size
QUESTION = "Which way does the ball move?"
CANDIDATES = ("left", "right", "up")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frame i is a flat grey of level 6·i, so a decoded frame names its index."""
    levels = (np.arange(COUNT) * 6).astype(np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (COUNT, HEIGHT, WIDTH, 3)).copy()
    path = tmp_path_factory.mktemp("vl3") / "ball.mp4"
    write_mp4(path, frames, FPS)
    return path


def frame_numbers(frames: np.ndarray) -> list[int]:
    return [int(round(float(f.mean()) / 6)) for f in frames]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path):
    prompts = [VIDEOLLAMA3_TVBENCH.render(s, "<|video_pad|>").text for s in read_samples(tiny_data)]
    prompts.append(" ".join((QUESTION, *CANDIDATES)))
    path = build_videollama3(tmp_path_factory.mktemp("vl3-model"), prompts)
    return load_model(str(path), device="cpu", dtype="float32")


def sample(video: Path, bound: tuple[float, float] | None = None) -> Sample:
    return Sample(
        id="Moving Direction/0000",
        task="Moving Direction",
        video=video,
        question=QUESTION,
        candidates=CANDIDATES,
        answer="right",
        bound=bound,
    )


# -- (a) frames ----------------------------------------------------------------------------------


def test_frames_are_evenly_spaced_with_both_ends():
    adapter = VideoLlama3Adapter()
    # linspace(0, 299, 8) = 0, 42.7, 85.4, 128.1, 170.9, 213.6, 256.3, 299
    assert adapter.frame_indices(300, 8).tolist() == [0, 42, 85, 128, 170, 213, 256, 299]
    # linspace(0, 15, 8) = 0, 2.14, 4.29, 6.43, 8.57, 10.71, 12.86, 15
    assert adapter.frame_indices(16, 8).tolist() == [0, 2, 4, 6, 8, 10, 12, 15]
    with pytest.raises(SampleError, match="holds 5 frames, fewer than the 8"):
        adapter.frame_indices(5, 8)


def test_the_adapter_picks_the_frames_over_the_video_and_its_bound(video: Path):
    adapter = VideoLlama3Adapter()
    whole = sample_frames(sample(video), 8, adapter)
    # linspace(0, 39, 8) = 0, 5.6, 11.1, 16.7, 22.3, 27.9, 33.4, 39
    assert frame_numbers(whole) == [0, 5, 11, 16, 22, 27, 33, 39]
    assert whole.indices.tolist() == [0, 5, 11, 16, 22, 27, 33, 39]
    # The dataset's own rule is what the other adapters get: segment midpoints,
    # ⌊4.875/2 + round(4.875·i)⌋ (round half to even).
    assert frame_numbers(sample_frames(sample(video), 8)) == [2, 7, 12, 17, 22, 26, 31, 36]
    # Bound 1–3 s: the frames whose time is in [1.0, 3.0), 10..29; linspace(0, 19, 8) =
    # 0, 2.7, 5.4, 8.1, 10.9, 13.6, 16.3, 19 → frames 10 + those.
    bounded = sample_frames(sample(video, (1.0, 3.0)), 8, adapter)
    assert frame_numbers(bounded) == [10, 12, 15, 18, 20, 23, 26, 29]
    # Under a second, the loader's arithmetic: ⌊1.0·10⌋−1 = 9 … ⌊1.5·10⌋−1 = 14, six frames;
    # linspace(0, 5, 4) = 0, 1.7, 3.3, 5.
    short = sample_frames(sample(video, (1.0, 1.5)), 4, adapter)
    assert frame_numbers(short) == [9, 10, 12, 14]
    with pytest.raises(SampleError, match="holds 6 frames"):
        sample_frames(sample(video, (1.0, 1.5)), 8, adapter)


# -- (b) timestamps ------------------------------------------------------------------------------


def test_a_300_frame_video_as_the_reference_reads_it(tmp_path: Path):
    """N = 300 at 30 fps (10 s): frames linspace(0, 299, 8); frame i stamped 10·i/299 s, so
    frame 256 is 8.56 s → "8.6" (its decoder time 256/30 = 8.53 s would read "8.5")."""
    levels = (np.arange(300) % 40 * 6).astype(np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (300, 32, 32, 3)).copy()
    path = tmp_path / "long.mp4"
    write_mp4(path, frames, 30)
    picked = sample_frames(sample(path), 8, VideoLlama3Adapter())
    assert picked.indices.tolist() == [0, 42, 85, 128, 170, 213, 256, 299]
    assert frame_numbers(picked) == [i % 40 for i in (0, 42, 85, 128, 170, 213, 256, 299)]
    stamps = [f"{t:.1f}" for t in picked.times]
    assert stamps == ["0.0", "1.4", "2.8", "4.3", "5.7", "7.1", "8.6", "10.0"]


def test_frames_are_stamped_as_the_reference_loader_stamps_them(video: Path):
    """Decoder times are float32: 1e-6 s against differences of 0.01–0.1 s between rules."""
    adapter = VideoLlama3Adapter()
    # The whole video: 0 … 4.0 s spread over its 40 frames, frame i at 4·i/39 s.
    whole = sample_frames(sample(video), 8, adapter)
    want = [0.0, 20 / 39, 44 / 39, 64 / 39, 88 / 39, 108 / 39, 132 / 39, 4.0]
    assert whole.times == pytest.approx(want, abs=1e-6)
    # Bound 1–3 s: 1.0 … 3.0 s spread over its 20 frames, position p at 1 + 2·p/19 s.
    bounded = sample_frames(sample(video, (1.0, 3.0)), 8, adapter)
    positions = [0, 2, 5, 8, 10, 13, 16, 19]
    assert bounded.times == pytest.approx([1 + 2 * p / 19 for p in positions], abs=1e-6)
    # Under a second: frame number / fps.
    short = sample_frames(sample(video, (1.0, 1.5)), 4, adapter)
    assert short.times == pytest.approx([0.9, 1.0, 1.2, 1.4], abs=1e-6)
    # Without the adapter the decoder's own times: frame number / fps.
    plain = read_frames(video, 8)
    assert plain.times == pytest.approx([0.2, 0.7, 1.2, 1.7, 2.2, 2.6, 3.1, 3.6], abs=1e-6)
    # The times travel with the frames: copies, edits and pickling (worker processes) keep them.
    dark = whole.copy()
    dark[5] = 0
    back = pickle.loads(pickle.dumps(dark))
    assert back.times.tolist() == whole.times.tolist()
    assert back.indices.tolist() == whole.indices.tolist()
    assert np.array_equal(back, dark) and not np.array_equal(back, whole)


# -- (c) resolution, (b) prompt text, (d) groups --------------------------------------------------


@pytest.fixture(scope="module")
def prepared(loaded, video: Path):
    s = sample(video)
    return s, loaded.adapter.prepare(loaded, s, sample_frames(s, 8, loaded.adapter))


def test_prompt_is_the_reference_string(loaded, prepared):
    """Times 4·i/39 s for frames 0, 5, 11, 16, 22, 27, 33, 39, rounded to one decimal."""
    _, prep = prepared
    stamps = ["0.0", "0.5", "1.1", "1.6", "2.3", "2.8", "3.4", "4.0"]
    frame = "<|video_pad|>" * (8 * 16)
    video = ",".join(f"Time {t}s:{frame}" for t in stamps)
    text = (
        f"<|im_start|>user\n{video}\nQuestion: {QUESTION}\nOptions:\n(A) left\n(B) right\n"
        "(C) up\nAnswer with the option's letter from the given choices directly and only give "
        "the best option.<|im_end|>\n<|im_start|>assistant\n"
    )
    want = loaded.tokenizer(text)["input_ids"]
    assert prep.inputs["input_ids"][0].tolist() == want


def test_frames_keep_their_aspect_ratio_within_the_token_budget(prepared):
    """Factor 8 (patch 4 × merge 2), 144 tokens a frame → at most 9216 px: 120×214 rounds to
    120×216 = 25920 px, too many; β = √(120·214 / 9216) = 1.669, ⌊120/β/8⌋ = 8, ⌊214/β/8⌋ = 16.
    (The real model, factor 28: 480×854 gives β = 1.906 and 8×16 as well.) A crop would give a
    square grid."""
    _, prep = prepared
    assert prep.inputs["video_grid_thw"][0].tolist() == [8, 16, 32]  # patches; merged 8×16
    assert prep.layout.video_grid == (8, 8, 16)
    assert prep.inputs["pixel_values_videos"].shape[0] == 8 * 16 * 32


def test_video_and_frame_groups_are_the_reference_ranges(loaded, prepared):
    _, prep = prepared
    ids = prep.inputs["input_ids"][0].tolist()
    video, frames = videollama3_ranges(loaded.tokenizer, ids)
    layout = prep.layout
    assert layout["video"].tolist() == video
    for t, positions in enumerate(frames):
        assert layout[f"frame_{t}"].tolist() == positions
    assert "video_markers" not in layout.groups
    # Frame 1's group starts with the comma and its time; its grid is its 8×16 tokens alone.
    words = loaded.tokenizer.convert_ids_to_tokens(ids[frames[1][0] : frames[1][0] + 6])
    assert words == [",", "Time", "0", ".", "5s", ":"]
    video_pad = loaded.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    pads = [i for i, t in enumerate(ids) if t == video_pad]
    assert layout.video_positions().ravel().tolist() == pads
    assert layout.frame_positions(3).ravel().tolist() == pads[3 * 128 : 4 * 128]


def test_cuts_cover_the_timestamp_text(loaded, prepared):
    _, prep = prepared
    ids = prep.inputs["input_ids"][0].tolist()
    video, frames = videollama3_ranges(loaded.tokenizer, ids)
    want = np.zeros((len(ids), len(ids)), dtype=bool)
    for t in range(1, 8):
        earlier = [p for f in frames[:t] for p in f]
        want[np.ix_(frames[t], earlier)] = True
    assert np.array_equal(blocked_edges("frame[<t] -> frame[t]", prep.layout), want)
    last = len(ids) - 1
    want = np.zeros_like(want)
    want[last, video] = True
    assert np.array_equal(blocked_edges("video -> last", prep.layout), want)


def test_frames_without_times_are_refused(loaded, prepared, video: Path):
    s, _ = prepared
    with pytest.raises(Exception, match="carry none"):
        loaded.adapter.prepare(loaded, s, np.asarray(read_frames(video, 8)))


def test_the_model_runs_on_the_reference_inputs(loaded, prepared):
    _, prep = prepared
    with torch.no_grad():
        logits = loaded.model(**prep.inputs).logits
    assert logits.shape[1] == prep.layout.seq_len and torch.isfinite(logits).all()
