"""Edge expressions against hand-written position sets."""

from __future__ import annotations

import numpy as np
import pytest

from flowtrace.edges import blocked_edges
from flowtrace.errors import FlowtraceError
from flowtrace.layout import TokenLayout


def small_layout() -> TokenLayout:
    # 0-1 system | 2..7 video: 3 frames × 2 tokens | 8-9 question | 10, 11 options A, B | 12 last
    groups = {
        "system": np.array([0, 1]),
        "video": np.arange(2, 8),
        "frame_0": np.array([2, 3]),
        "frame_1": np.array([4, 5]),
        "frame_2": np.array([6, 7]),
        "question": np.array([8, 9]),
        "option_A": np.array([10]),
        "option_B": np.array([11]),
        "options": np.array([10, 11]),
        "last": np.array([12]),
    }
    return TokenLayout(13, groups, (3, 1, 2), ("A", "B"), "A")


def pairs(matrix: np.ndarray) -> set[tuple[int, int]]:
    return {(int(q), int(k)) for q, k in zip(*np.nonzero(matrix), strict=True)}


def test_cross_frame_blocks_each_frame_from_earlier_frames():
    got = pairs(blocked_edges("frame[<t] -> frame[t]", small_layout()))
    want = {(q, k) for q in (4, 5) for k in (2, 3)} | {(q, k) for q in (6, 7) for k in range(2, 6)}
    assert got == want


def test_union_and_single_groups():
    got = pairs(blocked_edges("question, options -> last", small_layout()))
    assert got == {(12, 8), (12, 9), (12, 10), (12, 11)}
    got = pairs(blocked_edges("video -> question", small_layout()))
    assert got == {(q, k) for q in (8, 9) for k in range(2, 8)}
    # Only causal edges survive: frame_1 -> frame[1] keeps key <= query inside frame 1.
    got = pairs(blocked_edges("frame[1] -> frame[1]", small_layout()))
    assert got == {(4, 4), (5, 4), (5, 5)}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("video question", "source -> target"),
        ("vidoe -> question", "unknown token group 'vidoe'"),
        ("last -> video", "blocks no attention"),
        ("frame[9] -> last", "outside"),
        ("frame[x] -> last", "must be a number"),
        ("video -> ", "empty group"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expression: str, message: str):
    with pytest.raises(FlowtraceError, match=message):
        blocked_edges(expression, small_layout())
