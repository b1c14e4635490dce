"""Benchmark readers: fixture files in each benchmark's published format (written here, with tiny
generated videos) read back to hand-written Samples; frames, prompts, subsets and failures as
the reference code has them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from flowtrace.data import (
    DataSource,
    FrameRule,
    Sample,
    SampleError,
    list_tasks,
    parse_data,
    read_frames,
    read_samples,
    sample_frames,
    task_counts,
    validate_sample,
)
from flowtrace.data.synth import generate, write_mp4
from flowtrace.errors import DataError, OptionError
from flowtrace.models.prompt_template import EVAL_MVBENCH, EVAL_VCGBENCH, SYSTEM_MVBENCH

# decord cannot copy out frames of some tiny widths (16, 24, 48 px); 32 decodes cleanly.
SIZE = 32


def write_video(path: Path, n_frames: int, fps: int = 10) -> Path:
    """Frame k is flat grey 4k, so the frames read back name their own indices."""
    write_mp4(
        path, np.stack([np.full((SIZE, SIZE, 3), 4 * k, np.uint8) for k in range(n_frames)]), fps
    )
    return path


def numbers(frames: np.ndarray, step: int = 4) -> list[int]:
    return [round(float(f[..., 0].mean()) / step) for f in frames]


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def expect_error(sample: Sample, match: str) -> None:
    with pytest.raises(SampleError, match=match):
        validate_sample(sample)
        sample_frames(sample, 4)


# --- TVBench ---------------------------------------------------------------------------------

LOC_Q = "During which part of the video does the action 'open the door' occur?"
LOC_C = [
    "At the beginning of the video.",
    "In the middle of the video.",
    "At the end of the video.",
    "Throughout the entire video.",
]


@pytest.fixture(scope="module")
def tvbench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FunAILab/TVBench layout: json/<task>.json lists, video/<task>/<file>."""
    root = tmp_path_factory.mktemp("TVBench")
    video = root / "video"
    write_json(
        root / "json/action_antonym.json",
        [
            {
                "video": "ant_0.mp4",
                "question": "What is the action performed by the person in the video?",
                "candidates": ["Taking off a jacket.", "Putting on a jacket.", "Not sure"],
                "answer": "Putting on a jacket.",
            }
        ],
    )
    write_json(
        root / "json/action_count.json",
        [
            {
                "video": "ac_0.mp4",
                "question": "How many times?",
                "candidates": ["3", "4"],
                "answer": "3",
            }
        ],
    )
    write_json(
        root / "json/action_localization.json",
        [
            {"video": "loc_0.mp4", "question": LOC_Q, "candidates": LOC_C, "answer": LOC_C[1],
             "start": 1.0, "end": 2.5},
            {"video": "loc_0.mp4", "question": LOC_Q, "candidates": LOC_C, "answer": LOC_C[0],
             "start": 50, "end": 60},
        ],
    )  # fmt: skip
    write_json(
        root / "json/moving_direction.json",
        [
            {"video": "dir_0.mp4", "question": "What direction is the cyan sphere moving in?",
             "candidates": ["Up and to the left.", "Down and to the right."],
             "answer": "Down and to the right."},
            {"video": "dir_0.mp4", "question": "What direction is the red cube moving in?",
             "candidates": ["Up.", "Down."], "answer": "Sideways."},
        ],
    )  # fmt: skip
    write_json(
        root / "json/object_count.json",
        [
            {"video": "cnt_0.mp4", "question": "How many metal objects are moving?",
             "candidates": ["1", "2", "3"], "answer": "2"},
            {"video": "cnt_0.mp4", "question": "How many cylinders are moving?",
             "candidates": ["0", "1"]},
        ],
    )  # fmt: skip
    write_json(
        root / "json/scene_transition.json",
        [
            {"video": "gone.mp4", "question": "How does the scene change?",
             "candidates": ["From the kitchen to the garden.", "From a street to the beach."],
             "answer": "From the kitchen to the garden."},
            {"video": "corrupt.mp4", "question": "How does the scene change?",
             "candidates": ["From the kitchen to the garden.", "From a street to the beach."],
             "answer": "From a street to the beach."},
        ],
    )  # fmt: skip
    write_video(video / "action_antonym/ant_0.mp4", 10)
    write_video(video / "action_count/ac_0.mp4", 10)
    write_video(video / "action_localization/loc_0.mp4", 30)  # 3 s at 10 fps
    write_video(video / "moving_direction/dir_0.mp4", 10)
    write_video(video / "object_count/cnt_0.mp4", 10)
    (video / "scene_transition").mkdir(parents=True)
    (video / "scene_transition/corrupt.mp4").write_bytes(b"\x00not a video" * 100)
    return root


def test_tvbench_reads_to_the_published_entries(tvbench: Path):
    v = tvbench / "video"
    samples = read_samples(f"tvbench:{tvbench}")
    assert [s.id for s in samples] == [
        "Action Antonym/0000",
        "Action Count/0000",
        "Action Localization/0000",
        "Action Localization/0001",
        "Moving Direction/0000",
        "Moving Direction/0001",
        "Object Count/0000",
        "Object Count/0001",
        "Scene Transition/0000",
        "Scene Transition/0001",
    ]
    by_id = {s.id: s for s in samples}
    assert by_id["Action Localization/0000"] == Sample(
        id="Action Localization/0000",
        task="Action Localization",
        video=v / "action_localization/loc_0.mp4",
        question=LOC_Q,
        candidates=tuple(LOC_C),
        answer="In the middle of the video.",
        bound=(1.0, 2.5),
    )
    assert by_id["Object Count/0000"] == Sample(
        id="Object Count/0000",
        task="Object Count",
        video=v / "object_count/cnt_0.mp4",
        question="How many metal objects are moving?",
        candidates=("1", "2", "3"),
        answer="2",
    )
    for ok in ("Action Antonym/0000", "Action Localization/0000", "Object Count/0000"):
        validate_sample(by_id[ok])
    # Every kind of bad input fails its own sample with a reason naming it.
    expect_error(by_id["Action Localization/0001"], "bound 50.0–60.0 s lies outside the video")
    expect_error(by_id["Moving Direction/0001"], "'Sideways.' is not among the candidates")
    expect_error(by_id["Object Count/0001"], "Object Count/0001 lacks 'answer' in its annotation")
    expect_error(by_id["Scene Transition/0000"], "video not found: .*gone.mp4")
    expect_error(by_id["Scene Transition/0001"], "cannot decode video .*corrupt.mp4")


def test_plain_folder_synth_prefix_and_kind_read_the_same(tvbench: Path):
    assert read_samples(str(tvbench)) == read_samples(f"tvbench:{tvbench}")
    assert read_samples(tvbench) == read_samples(f"synth:{tvbench}")


def test_bounded_frames_are_the_reference_segment_midpoints(tvbench: Path):
    sample = read_samples(tvbench, tasks=["Action Localization"])[0]
    # 10 fps, bound 1.0–2.5 s: frames 10–25, segment 15/4 = 3.75, int(10 + 1.875 + round(3.75 i)).
    assert numbers(sample_frames(sample, 4)) == [11, 15, 19, 22]
    # The whole 30-frame video: segment 29/8 = 3.625, int(1.8125 + round(3.625 i)); round(14.5)
    # is 14 (half to even), so the fifth frame is 15, not 16.
    assert numbers(read_frames(sample.video, 8)) == [1, 5, 8, 12, 15, 19, 23, 26]


def test_tasks_by_name_or_index_and_counts(tvbench: Path):
    spec = f"tvbench:{tvbench}"
    assert list_tasks(spec) == [
        "Action Antonym",
        "Action Count",
        "Action Localization",
        "Moving Direction",
        "Object Count",
        "Scene Transition",
    ]
    assert task_counts(spec) == {
        "Action Antonym": 1,
        "Action Count": 1,
        "Action Localization": 2,
        "Moving Direction": 2,
        "Object Count": 2,
        "Scene Transition": 2,
    }
    assert {s.task for s in read_samples(spec, tasks=["3"])} == {"Moving Direction"}
    assert {s.task for s in read_samples(spec, tasks=["moving_direction"])} == {"Moving Direction"}
    assert {s.task for s in read_samples(spec, tasks=["Object count", "0"])} == {
        "Action Antonym",
        "Object Count",
    }
    with pytest.raises(OptionError, match="3=Moving Direction"):
        read_samples(spec, tasks=["Nope"])


def test_ratio_draws_the_reference_subset_per_task(tmp_path: Path):
    root = tmp_path / "many"
    for stem, n in (("object_count", 12), ("action_count", 7)):
        write_json(
            root / f"json/{stem}.json",
            [{"video": f"{i}.mp4", "question": f"q{i}", "candidates": ["a", "b"], "answer": "a"}
             for i in range(n)],
        )  # fmt: skip
    # The reference's analysis scripts: random.seed(42); random.sample(task_indices, test_ratio).
    random.seed(42)
    want_count = random.sample(list(range(12)), 5)
    random.seed(42)
    want_action = random.sample(list(range(7)), 5)
    picked = read_samples(root, ratio=5)
    assert [s.id for s in picked] == [f"Action Count/{i:04d}" for i in want_action] + [
        f"Object Count/{i:04d}" for i in want_count
    ]
    # A share keeps ⌊share·n⌋ of each task: 3 of 12, 1 of 7.
    random.seed(42)
    want_share = random.sample(list(range(12)), 3)
    shared = read_samples(root, tasks=["Object Count"], ratio=0.25)
    assert [s.id for s in shared] == [f"Object Count/{i:04d}" for i in want_share]
    assert len(read_samples(root, tasks=["Action Count"], ratio=0.25)) == 1
    assert len(read_samples(root, ratio=5, limit=3)) == 3
    for bad in (0, -1, 2.5, float("nan")):
        with pytest.raises(OptionError, match="ratio"):
            read_samples(root, ratio=bad)


# --- TVBench open-ended ----------------------------------------------------------------------


def test_tvbench_open_ended_answer_prompts_per_task(tvbench: Path):
    samples = {s.id: s for s in read_samples(f"tvbench-open:{tvbench}")}
    antonym = samples["Action Antonym/0000"]
    assert antonym.open_ended and antonym.style == "open"
    assert antonym.answer_prompt == (
        "\nThe action being performed in the video regarding the jacket is to"
    )
    assert antonym.answer == "putting on a jacket."
    assert antonym.candidates == ("taking off a jacket.", "putting on a jacket.", "not sure")
    count = samples["Action Count/0000"]  # no open-ended rule in the reference
    assert (count.answer_prompt, count.answer, count.candidates) == (None, "3", ())
    loc = samples["Action Localization/0000"]
    assert loc.answer_prompt == "\nThe action 'open the door' occurs at the"
    assert (loc.answer, loc.candidates) == ("middle", ("throughout", "beginning", "middle", "end"))
    direction = samples["Moving Direction/0000"]
    assert direction.answer_prompt == "\nThe cyan sphere moves to the"
    assert (direction.answer, direction.candidates) == ("right", ("left", "right"))
    red_cube = samples["Moving Direction/0001"]
    assert (red_cube.answer_prompt, red_cube.answer) == ("\nThe red cube moves to the", "left")
    objects = samples["Object Count/0000"]
    assert objects.answer_prompt == "\nThe number of moving objects is"
    assert (objects.answer, objects.candidates) == ("two", ("one", "two", "three"))
    scene = samples["Scene Transition/0001"]
    assert scene.question == (
        "Where does the scene in the video change from one place to another place?"
    )
    assert scene.answer_prompt == "\nThe scene in the video changes from the"
    assert scene.answer == "street to the beach."
    assert scene.candidates == ("kitchen to the garden.", "street to the beach.")
    # Open-ended samples are refused where option letters are scored, accepted where allowed.
    with pytest.raises(SampleError, match="open-ended"):
        validate_sample(objects)
    validate_sample(objects, allow_open_ended=True)


def test_open_ended_prompt_is_the_reference_conversation(tvbench: Path):
    sample = {s.id: s for s in read_samples(f"tvbench-open:{tvbench}")}["Object Count/0000"]
    rendered = EVAL_MVBENCH.render(sample, "<video>")
    # conv.user_query(question) + conv.assistant_response(answer_prompt) + get_prompt():
    assert rendered.text == (
        SYSTEM_MVBENCH + " USER: <video>\n USER: Question: How many metal objects are moving?\n"
        " ASSISTANT:\nThe number of moving objects is"
    )
    a, b = rendered.spans["question"]
    assert rendered.text[a:b] == "How many metal objects are moving?"
    a, b = rendered.spans["prompt_tail"]
    assert rendered.text[a:b] == "ASSISTANT:\nThe number of moving objects is"


def test_multiple_choice_prompt_is_unchanged(tvbench: Path):
    sample = read_samples(tvbench, tasks=["Object Count"])[0]
    assert EVAL_MVBENCH.render(sample, "<video>").text == (
        SYSTEM_MVBENCH + " USER: <video>\n USER: Question: How many metal objects are moving?\n"
        "Options:\n(A) 1\n(B) 2\n(C) 3 \nOnly give the best option. ASSISTANT:Best option:("
    )


# --- MVBench ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mvbench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenGVLab/MVBench layout: json/<task>.json, videos under their source datasets' folders."""
    from PIL import Image

    root = tmp_path_factory.mktemp("MVBench")
    write_json(
        root / "json/episodic_reasoning.json",
        [{"video": "castle_s01e01_seg02_clip_00", "question": "What does Castle do next?",
          "candidates": ["He sits.", "He leaves."], "answer": "He leaves.",
          "start": 2.0, "end": 6.0}],
    )  # fmt: skip
    write_json(
        root / "json/action_sequence.json",
        [
            {"video": "AB12C.mp4", "question": "What did the person do first?",
             "candidates": ["Took the cup.", "Opened the box."], "answer": "Took the cup.",
             "start": 0.5, "end": 3.0},
            {"video": "AB12C.mp4", "question": "What did the person do last?",
             "candidates": ["Took the cup.", "Opened the box."], "answer": "Took the cup.",
             "start": 0.5},
        ],
    )  # fmt: skip
    write_json(
        root / "json/action_antonym.json",
        [{"video": "1234.webm", "question": "What is the action?",
          "candidates": ["Pushing.", "Pulling."], "answer": "Pulling."}],
    )  # fmt: skip
    write_json(root / "json/notes.json", [])  # not an MVBench task
    clip = root / "video/tvqa/frames_fps3_hq/castle_s01e01_seg02_clip_00"
    clip.mkdir(parents=True)
    for k in range(1, 31):  # 10 s at 3 fps, numbered from 1 as TVQA's frames are
        Image.fromarray(np.full((8, 8, 3), 8 * k, np.uint8)).save(clip / f"{k:05d}.jpg", quality=95)
    write_video(root / "video/star/Charades_v1_480/AB12C.mp4", 40)
    return root


def test_mvbench_reads_tasks_from_their_source_folders(mvbench: Path):
    assert list_tasks(f"mvbench:{mvbench}") == [
        "Action Antonym",
        "Action Sequence",
        "Episodic Reasoning",
    ]
    samples = {s.id: s for s in read_samples(f"mvbench:{mvbench}")}
    assert samples["Episodic Reasoning/0000"] == Sample(
        id="Episodic Reasoning/0000",
        task="Episodic Reasoning",
        video=mvbench / "video/tvqa/frames_fps3_hq/castle_s01e01_seg02_clip_00",
        question="What does Castle do next?",
        candidates=("He sits.", "He leaves."),
        answer="He leaves.",
        bound=(2.0, 6.0),
        frame_rule=FrameRule(fps=3.0, first_index=1),
    )
    assert samples["Action Sequence/0000"].video == (
        mvbench / "video/star/Charades_v1_480/AB12C.mp4"
    )
    assert samples["Action Sequence/0000"].bound == (0.5, 3.0)
    assert samples["Action Antonym/0000"].video == mvbench / "video/ssv2_video/1234.webm"
    assert samples["Action Antonym/0000"].bound is None
    expect_error(samples["Action Sequence/0001"], "lacks 'end'")
    expect_error(samples["Action Antonym/0000"], "video not found: .*1234.webm")


def test_tvqa_frame_folders_use_the_reference_frame_numbers(mvbench: Path):
    sample = read_samples(f"mvbench:{mvbench}", tasks=["Episodic Reasoning"])[0]
    validate_sample(sample)
    # read_frame: 3 fps, frames 1…30; bound 2–6 s -> frames 6–18, segment 3: 7, 10, 13, 16.
    assert numbers(sample_frames(sample, 4), step=8) == [7, 10, 13, 16]
    # Whole clip: frames 1–30, segment 29/4 = 7.25, int(1 + 3.625 + round(7.25 i)).
    whole = read_frames(sample.video, 4, rule=sample.frame_rule)
    assert numbers(whole, step=8) == [4, 11, 18, 26]


def test_plain_frame_folders_and_gifs(tmp_path: Path):
    from PIL import Image

    images = [Image.fromarray(np.full((8, 8, 3), 20 * k, np.uint8)) for k in range(10)]
    for k, image in enumerate(images):
        image.save(tmp_path / f"{k:03d}.png")
    assert numbers(read_frames(tmp_path, 2), step=20) == [2, 6]  # 1 fps from the first file
    # decord cannot open GIFs; Pillow reads them at the reference's assumed 25 fps:
    # 10 frames, segment 9/4 = 2.25, int(1.125 + round(2.25 i)) = 1, 3, 5, 8.
    images[0].save(tmp_path / "a.gif", save_all=True, append_images=images[1:], duration=100)
    assert numbers(read_frames(tmp_path / "a.gif", 4), step=20) == [1, 3, 5, 8]
    # A 3-frame GIF asked for 8: the distinct frames 0, 1, 2 repeated as a sequence (read_gif).
    images[0].save(tmp_path / "b.gif", save_all=True, append_images=images[1:3], duration=100)
    assert numbers(read_frames(tmp_path / "b.gif", 8), step=20) == [0, 1, 2, 0, 1, 2, 0, 1]
    (tmp_path / "bad.gif").write_bytes(b"GIF89a" + b"\x00" * 20)
    with pytest.raises(SampleError, match="cannot decode GIF .*bad.gif"):
        read_frames(tmp_path / "bad.gif", 4)


# --- TOMATO ----------------------------------------------------------------------------------

TOMATO_COUNT = [
    {
        "question": "How many times does the person clap?",
        "options": ["1", "2", "3", "4", "5"],
        "answer": 2,
        "video_source_url": "",
        "motion_type": "count",
        "variation": {"counterfactual": 0, "composite": 0, "zoom": 0, "first_person": 0},
        "demonstration_type": "human",
        "note": "",
        "key": "0001-00",
    },
    {
        "question": "How many times does the ball bounce?",
        "options": ["1", "2"],
        "answer": 5,
        "video_source_url": "",
        "motion_type": "count",
        "variation": {"counterfactual": 0, "composite": 0, "zoom": 0, "first_person": 0},
        "demonstration_type": "object",
        "note": "",
        "key": "0002-00",
    },
]
TOMATO_DIRECTION = [
    {
        "question": "Which direction does the car turn?",
        "options": ["Left.", "Right.", "It does not turn."],
        "answer": 1,
        "video_source_url": "https://example.org/v",
        "motion_type": "direction",
        "variation": {"counterfactual": 0, "composite": 1, "zoom": 0, "first_person": 0},
        "demonstration_type": "simulated",
        "note": "",
        "key": "0100-02",
    }
]


def tomato_expected(root: Path) -> list[Sample]:
    return [
        Sample(
            id="Count/0000",
            task="Count",
            video=root / "videos/human/0001-00.mp4",
            question="How many times does the person clap?",
            candidates=("1", "2", "3", "4", "5"),
            answer="3",
        ),
        Sample(
            id="Count/0001",
            task="Count",
            video=Path(),
            question="",
            candidates=(),
            answer="",
            problem="has answer 5; need the index (0–1) of an option",
        ),
        Sample(
            id="Direction/0000",
            task="Direction",
            video=root / "videos/simulated/0100-02.mp4",
            question="Which direction does the car turn?",
            candidates=("Left.", "Right.", "It does not turn."),
            answer="Right.",
        ),
    ]


def test_tomato_json_as_the_reference_reads_it(tmp_path: Path):
    # The GitHub release: an object keyed "0", "1", … per task; the reference reads jsons/.
    write_json(tmp_path / "jsons/count.json", {str(i): e for i, e in enumerate(TOMATO_COUNT)})
    write_json(tmp_path / "jsons/direction.json", {"0": TOMATO_DIRECTION[0]})
    write_video(tmp_path / "videos/human/0001-00.mp4", 10)
    samples = read_samples(f"tomato:{tmp_path}")
    assert samples == tomato_expected(tmp_path.absolute())
    validate_sample(samples[0])
    expect_error(samples[1], "Count/0001 has answer 5; need the index")
    expect_error(samples[2], "video not found: .*0100-02.mp4")


def test_tomato_parquet_as_hugging_face_publishes_it(tmp_path: Path):
    write_parquet(tmp_path / "data/count-00000-of-00001.parquet", TOMATO_COUNT)
    write_parquet(tmp_path / "data/direction-00000-of-00001.parquet", TOMATO_DIRECTION)
    assert list_tasks(f"tomato:{tmp_path}") == ["Count", "Direction"]
    assert read_samples(f"tomato:{tmp_path}") == tomato_expected(tmp_path.absolute())


# --- LongVideoBench --------------------------------------------------------------------------


def lvb_entry(i: int, category: str, video: str, duration: float, choice: object) -> dict:
    return {
        "video_id": video.removesuffix(".mp4"),
        "question": f"Question {i}: what happens after the man waves?",
        "question_wo_referring_query": "What happens?",
        "candidates": ["He sits down.", "He runs away.", "He waves again."],
        "correct_choice": choice,
        "position": [10, 20],
        "topic_category": "NP-News-Programs",
        "question_category": category,
        "level": "L2-Relation",
        "id": f"{video.removesuffix('.mp4')}_{i}",
        "video_path": video,
        "subtitle_path": f"{video.removesuffix('.mp4')}_en.json",
        "duration_group": 15,
        "starting_timestamp_for_subtitles": 0,
        "duration": duration,
        "view_count": 123,
    }


def test_longvideobench_tasks_are_question_categories_frames_its_stride(tmp_path: Path):
    write_json(
        tmp_path / "lvb_val.json",
        [
            lvb_entry(0, "T3O", "abc.mp4", 4.9, 1),
            lvb_entry(1, "S2E", "abc.mp4", 10.0, 0),
            lvb_entry(2, "T3O", "abc.mp4", 4.9, 3),
        ],
    )
    write_video(tmp_path / "videos/abc.mp4", 50)  # 5 s at 10 fps
    spec = f"longvideobench:{tmp_path}"
    assert list_tasks(spec) == ["S2E", "T3O"]
    samples = {s.id: s for s in read_samples(spec)}
    assert samples["T3O/0000"] == Sample(
        id="T3O/0000",
        task="T3O",
        video=tmp_path.absolute() / "videos/abc.mp4",
        question="Question 0: what happens after the man waves?",
        candidates=("He sits down.", "He runs away.", "He waves again."),
        answer="He runs away.",
        frame_rule=FrameRule(duration=4.9),
    )
    # load_video: min(8, ⌊4.9⌋) = 4 frames, stride int(int(4.9·10) / 4) = 12, last one repeated.
    assert numbers(sample_frames(samples["T3O/0000"], 8)) == [0, 12, 24, 36, 36, 36, 36, 36]
    expect_error(samples["S2E/0000"], "duration 10.0 s in the annotation is longer than the video")
    expect_error(samples["T3O/0001"], "has correct_choice 3")


# --- Video-MME -------------------------------------------------------------------------------


def mme_row(n: int, video_id: str, options: list[str], answer: str) -> dict:
    return {
        "video_id": "001",
        "duration": "short",
        "domain": "Knowledge",
        "sub_category": "Humanity & History",
        "url": f"https://www.youtube.com/watch?v={video_id}",
        "videoID": video_id,
        "question_id": f"001-{n}",
        "task_type": "Counting Problem" if n < 3 else "Object Recognition",
        "question": f"How many kinds of fruit appear? ({n})",
        "options": options,
        "answer": answer,
    }


FRUIT = ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."]


def test_videomme_reads_the_parquet_and_keeps_the_option_letters(tmp_path: Path):
    write_parquet(
        tmp_path / "videomme/test-00000-of-00001.parquet",
        [
            mme_row(1, "fFjv93ACGo8", FRUIT, "C"),
            mme_row(2, "xyz", ["A. One.", "B. Two."], "E"),
            mme_row(3, "mkvVideo", ["A) One.", "B) Two."], "A"),
            mme_row(4, "mkvVideo", ["A. One.", "B. Two."], "B"),
        ],
    )
    write_video(tmp_path / "data/fFjv93ACGo8.mp4", 10)
    (tmp_path / "data/mkvVideo.mkv").write_bytes(b"not decoded here")
    spec = f"videomme:{tmp_path}"
    assert list_tasks(spec) == ["Counting Problem", "Object Recognition"]
    samples = {s.id: s for s in read_samples(spec)}
    first = samples["Counting Problem/0000"]
    assert first == Sample(
        id="Counting Problem/0000",
        task="Counting Problem",
        video=tmp_path.absolute() / "data/fFjv93ACGo8.mp4",
        question="How many kinds of fruit appear? (1)",
        candidates=("Apples.", "Candles.", "Berries.", "The three kinds are of the same number."),
        answer="Berries.",
        style="letters",
    )
    validate_sample(first)
    expect_error(samples["Counting Problem/0001"], "has answer 'E'")
    expect_error(samples["Object Recognition/0000"], "need 'A. …', 'B. …'")
    assert samples["Object Recognition/0001"].video == tmp_path.absolute() / "data/mkvVideo.mkv"
    # The reference's videomme prompt: options as given, last newline kept, "Best option:".
    rendered = EVAL_MVBENCH.render(first, "<video>")
    assert rendered.text == (
        SYSTEM_MVBENCH + " USER: <video>\n USER: Question: How many kinds of fruit appear? (1)\n"
        "Options:\nA. Apples.\nB. Candles.\nC. Berries.\nD. The three kinds are of the same "
        "number.\n \nOnly give the best option. ASSISTANT:Best option:"
    )
    a, b = rendered.spans["option_C"]
    assert rendered.text[a:b] == "C. Berries."


# --- VCGBench --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vcgbench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Video-ChatGPT benchmark layout: Benchmarking_QA/<task>.json, Test_Videos/."""
    root = tmp_path_factory.mktemp("VCGBench")
    qa = root / "Benchmarking_QA"
    write_json(
        qa / "generic_qa.json",
        [
            {"Q": "What is the man doing?", "A": "He is juggling three red balls.",
             "video_name": "v_abc"},
            {"Q": "Where is this?", "video_name": "v_abc"},
        ],
    )  # fmt: skip
    write_json(
        qa / "temporal_qa.json",
        [{"Q": "What happens after the dog jumps?", "A": "It catches the frisbee.",
          "video_name": "v_mkv"}],
    )  # fmt: skip
    write_json(
        qa / "consistency_qa.json",
        [{"Q1": "What is the parrot eating?", "Q2": "What does the parrot eat from the cup?",
          "A": "Cream from a pink cup.", "video_name": "v_abc"}],
    )  # fmt: skip
    write_video(root / "Test_Videos/v_abc.mp4", 10)
    (root / "Test_Videos/v_mkv.mkv").write_bytes(b"x")
    return root


def test_vcgbench_is_open_ended_with_reference_answers(vcgbench: Path):
    spec = f"vcgbench:{vcgbench}"
    assert list_tasks(spec) == ["consistency_qa", "generic_qa", "temporal_qa"]
    samples = {s.id: s for s in read_samples(spec)}
    assert samples["consistency_qa/0000"] == Sample(
        id="consistency_qa/0000",
        task="consistency_qa",
        video=vcgbench / "Test_Videos/v_abc.mp4",
        question="What is the parrot eating?",
        candidates=(),
        answer="Cream from a pink cup.",
        style="plain",
    )
    assert samples["temporal_qa/0000"].video == vcgbench / "Test_Videos/v_mkv.mkv"
    assert [s.task for s in read_samples(spec, tasks=["2"])] == ["temporal_qa"]
    generic = samples["generic_qa/0000"]
    assert generic.open_ended and generic.answer == "He is juggling three red balls."
    with pytest.raises(SampleError, match="generic_qa/0000 is open-ended"):
        validate_sample(generic)
    validate_sample(generic, allow_open_ended=True)
    with pytest.raises(SampleError, match="generic_qa/0001 lacks 'A'"):
        validate_sample(samples["generic_qa/0001"], allow_open_ended=True)
    # conv_eval_vcg: the question alone, no instruction, the reply starts empty.
    assert EVAL_VCGBENCH.render(generic, "<video>").text == (
        "You are Video-ChatGPT, a large vision-language assistant. You are able to understand "
        "the video content that the user provides, and assist the user with a variety of tasks "
        "using natural language.Follow the instructions carefully and explain your answers in "
        "detail based on the provided video. USER: <video>\n USER: What is the man doing? "
        "ASSISTANT:"
    )


# --- --data values ---------------------------------------------------------------------------


def test_data_names_from_the_user_config(tvbench: Path, tmp_path: Path, monkeypatch):
    config = tmp_path / "conf" / "data.toml"
    config.parent.mkdir()
    (tmp_path / "conf" / "vcg").mkdir()
    config.write_text(
        f'tv = "tvbench:{tvbench}"\nopen = "tvbench-open:{tvbench}"\nrel = "vcgbench:vcg"\n'
        'bad = "/no/kind"\n'
    )
    monkeypatch.setenv("FLOWTRACE_DATA_CONFIG", str(config))
    assert parse_data("tv") == DataSource(kind="tvbench", root=tvbench, spec="tv")
    assert parse_data("open").kind == "tvbench-open"
    assert parse_data("rel").root == tmp_path / "conf" / "vcg"  # relative to the file
    assert read_samples("tv") == read_samples(tvbench)
    with pytest.raises(DataError, match="bad = '/no/kind' is not KIND:PATH"):
        parse_data("bad")
    with pytest.raises(DataError, match=r"no dataset of that name .*names there: bad, open"):
        parse_data("nothere")
    with pytest.raises(DataError, match="unknown dataset kind 'tvbnech'"):
        parse_data(f"tvbnech:{tvbench}")
    with pytest.raises(DataError, match="no such folder .*nowhere.*json/<task>.json"):
        parse_data(f"tvbench:{tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match="no lvb_val.json"):
        read_samples(f"longvideobench:{tvbench}")


def test_runner_resolves_toy_and_kinds(tvbench: Path):
    from flowtrace.errors import FlowtraceError
    from flowtrace.runner import resolve_data
    from flowtrace.toy import EMBEDDED_DATA

    assert resolve_data("toy") == DataSource(kind="tvbench", root=EMBEDDED_DATA, spec="toy")
    assert resolve_data(f"mvbench:{tvbench}").kind == "mvbench"
    with pytest.raises(FlowtraceError, match="no such folder"):
        resolve_data("/no/such/folder")


def test_data_ls_prints_index_name_and_count(tvbench: Path):
    from typer.testing import CliRunner

    from flowtrace.cli import app

    done = CliRunner().invoke(app, ["data", "ls", f"tvbench:{tvbench}"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        "0\tAction Antonym\t1",
        "1\tAction Count\t1",
        "2\tAction Localization\t2",
        "3\tMoving Direction\t2",
        "4\tObject Count\t2",
        "5\tScene Transition\t2",
    ]
    done = CliRunner().invoke(app, ["data", "ls", f"tomato:{tvbench}"])
    assert done.exit_code == 2 and "no TOMATO annotations" in done.output


# --- runs: bad samples fail alone ------------------------------------------------------------


def test_a_run_records_each_bad_sample_and_goes_on(tmp_path: Path):
    from flowtrace.recipe import load_recipe
    from flowtrace.runner import RunOptions, run

    root = generate(tmp_path / "data", n_per_task=1, seed=3)

    def add(stem: str, entry: dict) -> None:
        file = root / "json" / f"{stem}.json"
        file.write_text(json.dumps([*json.loads(file.read_text()), entry]))

    good = json.loads((root / "json/moving_direction.json").read_text())[0]
    add("moving_direction", {**good, "video": "missing.mp4"})
    add("object_count", {k: v for k, v in good.items() if k != "answer"})
    add("object_color", {**good, "answer": "purple elephant"})
    add("event_order", {**good, "video": "corrupt.mp4"})
    (root / "video/event_order/corrupt.mp4").write_bytes(b"\x00" * 500)
    # An unlisted task reads start/end where present: this bound lies past the 2 s clip.
    add("event_order", {**good, "video": good["video"], "start": 50, "end": 60})
    (root / "video/event_order" / good["video"]).write_bytes(
        (root / "video/moving_direction" / good["video"]).read_bytes()
    )
    out = tmp_path / "eval.zarr"
    options = RunOptions(data=f"tvbench:{root}", out=out, eval_only=True, plot=False, device="cpu")
    result = run(load_recipe("recipes/cross_frame.py"), options)
    assert result.counts == {"ok": 4, "failed": 5}
    assert sum(result.reasons.values()) == 5
    ds = xr.open_zarr(out)
    reasons = {
        str(i): str(r) for i, r, s in zip(ds["sample"].values, ds["reason"].values,
                                          ds["status"].values, strict=True) if s == "failed"
    }  # fmt: skip
    assert sorted(reasons) == [
        "Event Order/0001",
        "Event Order/0002",
        "Moving Direction/0001",
        "Object Color/0001",
        "Object Count/0001",
    ]
    assert "video not found" in reasons["Moving Direction/0001"]
    assert "lacks 'answer'" in reasons["Object Count/0001"]
    assert "'purple elephant' is not among the candidates" in reasons["Object Color/0001"]
    assert "cannot decode video" in reasons["Event Order/0001"]
    bound = reasons["Event Order/0002"]
    assert "lies outside the video" in bound or "holds no frame of the video" in bound
    assert ds.attrs["data_kind"] == "tvbench" and ds.attrs["ratio"] == 0


def test_a_letter_scoring_recipe_fails_open_ended_samples_with_the_reason(vcgbench: Path, tmp_path):
    from flowtrace.recipe import load_recipe
    from flowtrace.runner import RunOptions, run

    options = RunOptions(
        data=f"vcgbench:{vcgbench}", out=tmp_path / "probe.zarr", ratio=1, plot=False, device="cpu"
    )
    result = run(load_recipe("recipes/gen_prob.py"), options)
    assert result.counts == {"failed": 3}  # one per task (--ratio 1)
    assert all("is open-ended" in reason for reason in result.reasons), result.reasons
    assert xr.open_zarr(tmp_path / "probe.zarr").attrs["ratio"] == 1


def test_a_run_reads_frames_by_the_benchmarks_rule(tmp_path: Path):
    """LongVideoBench's stride over the annotated duration reaches the runner: a duration past
    the video's end fails that sample (segment midpoints would read it without complaint)."""
    from flowtrace.recipe import load_recipe
    from flowtrace.runner import RunOptions, run

    write_json(tmp_path / "lvb_val.json", [lvb_entry(0, "S2E", "abc.mp4", 10.0, 0)])
    write_video(tmp_path / "videos/abc.mp4", 50)
    options = RunOptions(
        data=f"longvideobench:{tmp_path}", out=tmp_path / "lvb.zarr", eval_only=True, plot=False
    )
    result = run(load_recipe("recipes/cross_frame.py"), options)
    assert result.counts == {"failed": 1}
    assert "longer than the video" in next(iter(result.reasons))
