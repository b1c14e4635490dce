"""vql_to_ql cuts what its labels say: video -> question and question -> last, with positions
found here from the token ids and the reference code's question block, not from the layout."""

from __future__ import annotations

import numpy as np
import pytest

from flowtrace.data import read_frames, read_samples
from flowtrace.models import load_model
from flowtrace.recipe import load_recipe
from flowtrace.tokens.sweep import Sweep
from flowtrace.toy import EMBEDDED_DATA


def find_sublist(ids: list[int], sub: list[int]) -> list[int]:
    hits = [s for s in range(len(ids) - len(sub) + 1) if ids[s : s + len(sub)] == sub]
    assert len(hits) == 1, f"{len(hits)} matches"
    return list(range(hits[0], hits[0] + len(sub)))


@pytest.mark.parametrize("task", ["Object Count", "Moving Direction"])
def test_vql_to_ql_edges_are_the_reference_question_block(task: str):
    toy = load_model("toy", device="cpu", dtype="float32")
    sample = read_samples(EMBEDDED_DATA, tasks=[task])[0]
    prepared = toy.adapter.prepare(toy, sample, read_frames(sample.video, 8))
    ids = prepared.inputs["input_ids"][0].tolist()
    seq_len = len(ids)
    # The reference code's qa_template: the question, then every option on its own line.
    letters = "ABCDEFGH"[: len(sample.candidates)]
    block = f"Question: {sample.question}\nOptions:\n" + "\n".join(
        f"({letter}) {candidate}"
        for letter, candidate in zip(letters, sample.candidates, strict=True)
    )
    query = find_sublist(ids, toy.tokenizer(block, add_special_tokens=False)["input_ids"])
    video = [i for i, t in enumerate(ids) if t == toy.processor.video_token_id]
    last = [seq_len - 1]
    assert len(video) == int(np.prod(toy.adapter.video_grid(toy, 8)))
    assert video[-1] < query[0] and query[-1] < last[0]

    def matrix(queries: list[int], keys: list[int]) -> np.ndarray:
        m = np.zeros((seq_len, seq_len), dtype=bool)
        m[np.ix_(queries, keys)] = True
        return m & np.tri(seq_len, dtype=bool)

    want = {
        ("video", "question"): matrix(query, video),
        ("question", "last"): matrix(last, query),
        ("video", "last"): matrix(last, video),
        ("last", "last"): matrix(last, last),
    }
    conditions = load_recipe("vql_to_ql").conditions(
        prepared.layout, toy.num_layers, Sweep(window=1)
    )
    seen = set()
    for condition in conditions:
        blocked = condition.knockout.blocked[condition.layer].numpy()
        key = (condition.source, condition.target)
        assert np.array_equal(blocked, want[key]), key
        assert condition.edges == want[key].sum()
        seen.add(key)
    assert seen == set(want)
