"""Data: reference frame sampling, the synthetic generator (answers read off pixels), readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flowtrace.data import (
    SampleError,
    list_tasks,
    read_frames,
    read_samples,
    segment_indices,
    validate_sample,
)
from flowtrace.data.synth import BACKGROUND, COLORS, generate
from flowtrace.errors import DataError, OptionError


def test_segment_indices_match_hand_computed_values():
    # 16 frames, 8 segments: seg = 15/8 = 1.875; int(0.9375 + round(1.875 i)).
    assert segment_indices(15, 8).tolist() == [0, 2, 4, 6, 8, 9, 11, 13]
    # 100 frames at 10 fps, bound 2–6 s: start 20, end 60, seg 10 -> 25, 35, 45, 55.
    assert segment_indices(99, 4, fps=10, bound=(2, 6)).tolist() == [25, 35, 45, 55]
    # No bound: the whole video, end clipped to max_frame.
    assert segment_indices(9, 2).tolist() == [2, 6]
    with pytest.raises(SampleError, match="outside the video"):
        segment_indices(99, 4, fps=10, bound=(20, 30))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth"), n_per_task=6, seed=11)


def foreground(frame: np.ndarray) -> np.ndarray:
    return np.abs(frame.astype(int) - np.array(BACKGROUND)).sum(-1) > 60


def nearest_color(pixels: np.ndarray) -> str:
    mean = pixels.reshape(-1, 3).mean(0)
    return min(COLORS, key=lambda c: float(np.abs(np.array(COLORS[c]) - mean).sum()))


def test_layout_and_fields(data: Path):
    assert list_tasks(data) == ["Event Order", "Moving Direction", "Object Color", "Object Count"]
    entries = json.loads((data / "json" / "moving_direction.json").read_text())
    assert len(entries) == 6
    assert set(entries[0]) == {"video", "question", "candidates", "answer"}
    assert (data / "video" / "moving_direction" / entries[0]["video"]).is_file()
    samples = read_samples(data)
    assert len(samples) == 24
    for sample in samples:
        validate_sample(sample)
        assert read_frames(sample.video, 8).shape == (8, 64, 64, 3)


def test_answers_are_recoverable_from_the_decoded_frames(data: Path):
    """An independent pixel rule finds every answer in the 8 frames a model sees."""
    for sample in read_samples(data):
        frames = read_frames(sample.video, 8)
        masks = [foreground(f) for f in frames]
        if sample.task == "Moving Direction":
            ys = [np.nonzero(m)[0].mean() for m in masks]
            xs = [np.nonzero(m)[1].mean() for m in masks]
            dy, dx = ys[-1] - ys[0], xs[-1] - xs[0]
            seen = (
                ("down" if dy > 0 else "up")
                if abs(dy) > abs(dx)
                else ("right" if dx > 0 else "left")
            )
            assert seen == sample.answer
            assert max(abs(dy), abs(dx)) > 20
        elif sample.task == "Object Count":
            flashes = sum(1 for m in masks if m.sum() > 10)
            assert ["one", "two", "three", "four"][flashes - 1] == sample.answer
        elif sample.task == "Object Color":
            colors = {nearest_color(f[m]) for f, m in zip(frames, masks, strict=True)}
            assert colors == {sample.answer}
        elif sample.task == "Event Order":
            first = next(i for i, m in enumerate(masks) if m.any())
            side = "left" if np.nonzero(masks[first])[1].mean() < 32 else "right"
            assert side == sample.answer
            assert masks[-1].sum() > masks[first].sum()  # the other object appears later


def test_same_seed_same_data_other_seed_other_data(data: Path, tmp_path: Path):
    again = generate(tmp_path / "again", n_per_task=6, seed=11)
    other = generate(tmp_path / "other", n_per_task=6, seed=12)
    for task in ("moving_direction", "object_count"):
        same = (again / "json" / f"{task}.json").read_text()
        assert same == (data / "json" / f"{task}.json").read_text()
        assert (other / "json" / f"{task}.json").read_text() != same
    a, b = read_samples(data)[0], read_samples(again)[0]
    assert np.array_equal(read_frames(a.video, 8), read_frames(b.video, 8))


def test_candidate_order_is_shuffled_or_fixed(tmp_path: Path):
    root = generate(tmp_path / "a", n_per_task=40, seed=0, tasks=["Moving Direction"])
    assert {s.candidates.index(s.answer) for s in read_samples(root)} == {0, 1, 2, 3}
    assert len({s.candidates for s in read_samples(root)}) > 1
    fixed = generate(tmp_path / "b", n_per_task=40, seed=0, shuffle=False)
    for task in list_tasks(fixed):
        samples = read_samples(fixed, tasks=[task])
        assert len({s.candidates for s in samples}) == 1  # one order per task
        assert len({s.answer for s in samples}) == len(samples[0].candidates)  # every answer


def test_limit_is_spread_over_tasks(data: Path):
    picked = read_samples(data, limit=6)
    assert [s.task for s in picked].count("Event Order") == 2
    assert {s.task for s in picked} == set(list_tasks(data))
    assert [s.task for s in read_samples(data, tasks=["1"])] == ["Moving Direction"] * 6
    with pytest.raises(OptionError, match="0=Event Order"):
        read_samples(data, tasks=["Nope"])


def test_bad_samples_raise_clear_errors(data: Path, tmp_path: Path):
    sample = read_samples(data)[0]
    missing = sample.__class__(**{**sample.__dict__, "video": tmp_path / "gone.mp4"})
    with pytest.raises(SampleError, match="video not found: .*gone.mp4"):
        validate_sample(missing)
    with pytest.raises(SampleError, match="video not found"):
        read_frames(missing.video, 8)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(SampleError, match="corrupt.mp4"):
        read_frames(corrupt, 8)
    wrong = sample.__class__(**{**sample.__dict__, "answer": "purple elephant"})
    with pytest.raises(SampleError, match="'purple elephant' is not among the candidates"):
        validate_sample(wrong)
    with pytest.raises(DataError, match="no json/ folder"):
        read_samples(tmp_path)


def test_frame_folders_are_read_too(tmp_path: Path):
    from PIL import Image

    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), i * 20, dtype=np.uint8)).save(tmp_path / f"{i:03d}.png")
    frames = read_frames(tmp_path, 2)
    assert frames[:, 0, 0, 0].tolist() == [40, 120]  # indices 2 and 6 of 0..9


def test_generator_reproduces_the_embedded_heldout_split(tmp_path: Path):
    """The shipped held-out split is what `flowtrace toy train --seed 0` generates."""
    from flowtrace.toy import EMBEDDED_DATA
    from flowtrace.toy.train import HELDOUT_SEED_OFFSET, TrainConfig

    config = TrainConfig()
    again = generate(
        tmp_path,
        n_per_task=config.heldout_per_task,
        seed=config.seed + HELDOUT_SEED_OFFSET,
        shuffle=config.shuffle_candidates,
    )
    for shipped in sorted((EMBEDDED_DATA / "json").glob("*.json")):
        assert (again / "json" / shipped.name).read_text() == shipped.read_text()
    sample = read_samples(EMBEDDED_DATA)[5]
    fresh = read_samples(again)[5]
    assert np.array_equal(read_frames(sample.video, 8), read_frames(fresh.video, 8))


def _copy_with(data: Path, tmp_path: Path, task_file: str, entries: list[dict]) -> Path:
    """A copy of the dataset whose one task file holds `entries`."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(data, root)
    for other in (root / "json").glob("*.json"):
        if other.name != task_file:
            other.unlink()
    (root / "json" / task_file).write_text(json.dumps(entries))
    return root


def test_more_options_than_letters_fail_that_sample_alone(data: Path, tmp_path: Path):
    good = json.loads((data / "json" / "object_count.json").read_text())[0]
    many = [f"choice {i}" for i in range(30)]
    root = _copy_with(
        data, tmp_path, "object_count.json", [good, {**good, "candidates": many, "answer": many[3]}]
    )
    first, second = read_samples(root)
    validate_sample(first)
    assert first.option_letters() == ("A", "B", "C", "D")
    # Letters past Z would be '[', '\\', …: the sample fails with its reason, the run goes on.
    assert second.candidates == ()
    with pytest.raises(SampleError, match=r"Object Count/0001 has 30 options, more than the 26"):
        validate_sample(second)
    exactly = read_samples(
        _copy_with(
            data,
            tmp_path / "b",
            "object_count.json",
            [{**good, "candidates": many[:26], "answer": many[25]}],
        )
    )[0]
    validate_sample(exactly)
    assert exactly.option_letters()[-1] == "Z" and exactly.answer_letter == "Z"


def test_a_video_outside_the_dataset_folder_is_refused(data: Path, tmp_path: Path):
    good = json.loads((data / "json" / "object_count.json").read_text())[0]
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not yours")
    entries = [
        {**good, "video": "../../../secret.mp4"},  # climbs out of video/object_count/
        {**good, "video": str(secret)},  # an absolute path elsewhere
        {**good, "video": "../event_order/event_order_0000.mp4"},  # climbs, stays inside
        {**good, "video": "linked.mp4"},  # a symlink inside the root to another disk
    ]
    root = _copy_with(data, tmp_path, "object_count.json", entries)
    outside = tmp_path / "elsewhere.mp4"
    (root / "video" / "object_count" / good["video"]).rename(outside)
    (root / "video" / "object_count" / good["video"]).symlink_to(outside)
    (root / "video" / "object_count" / "linked.mp4").symlink_to(outside)
    climbing, absolute, inside, linked = read_samples(root)
    for sample in (climbing, absolute):
        with pytest.raises(SampleError, match="names a video outside the dataset folder"):
            validate_sample(sample)
    validate_sample(inside)
    validate_sample(linked)


def test_a_file_given_as_data_is_called_a_file(data: Path, tmp_path: Path):
    file = data / "json" / "object_count.json"
    with pytest.raises(DataError, match=r"is a file, not a dataset folder; pass the folder"):
        read_samples(str(file))
    with pytest.raises(DataError, match=r"is a file, not a folder; give tvbench:FOLDER"):
        read_samples(f"tvbench:{file}")
    with pytest.raises(DataError, match=r"is a file; give the dataset's folder"):
        read_samples(file)
