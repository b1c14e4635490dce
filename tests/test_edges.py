"""Edge expressions against hand-written position sets."""

from __future__ import annotations

import numpy as np
import pytest

from flowtrace.errors import FlowtraceError
from flowtrace.tokens.edges import blocked_edges
from flowtrace.tokens.layout import TokenLayout


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


def frames(*indices: int) -> list[int]:
    """Positions of the small layout's frames: frame t holds 2 + 2t and 3 + 2t."""
    return [p for t in indices for p in (2 + 2 * t, 3 + 2 * t)]


def causal(queries: list[int], keys: list[int]) -> set[tuple[int, int]]:
    return {(q, k) for q in queries for k in keys if k <= q}


@pytest.mark.parametrize(
    ("expression", "want"),
    [
        # with t: the union over t = 0, 1, 2
        (
            "frame[<=t] -> frame[t]",
            causal(frames(0), frames(0))
            | causal(frames(1), frames(0, 1))
            | causal(frames(2), frames(0, 1, 2)),
        ),
        ("frame[t] -> frame[>t]", causal(frames(1, 2), frames(0)) | causal(frames(2), frames(1))),
        (
            "frame[t] -> frame[>=t]",
            causal(frames(0, 1, 2), frames(0))
            | causal(frames(1, 2), frames(1))
            | causal(frames(2), frames(2)),
        ),
        # with a number
        ("frame[<=1] -> last", causal([12], frames(0, 1))),
        ("frame[>0] -> last", causal([12], frames(1, 2))),
        ("frame[>=2] -> last", causal([12], frames(2))),
        ("frame[<1] -> question", causal([8, 9], frames(0))),
    ],
)
def test_index_operators(expression: str, want: set[tuple[int, int]]):
    assert pairs(blocked_edges(expression, small_layout())) == want


def test_t_over_two_families_of_different_sizes_is_refused():
    layout = small_layout()
    groups = dict(layout.groups) | {"clip_0": np.array([2, 3, 4]), "clip_1": np.array([5, 6, 7])}
    two = TokenLayout(layout.seq_len, groups, (3, 1, 2), ("A", "B"), "A")
    with pytest.raises(FlowtraceError, match="`t` must index one family"):
        blocked_edges("clip[<t] -> frame[t]", two)
    # A fixed index into the other family is fine: only `t` must stay in one family.
    got = pairs(blocked_edges("clip[0] -> frame[t]", two))
    assert got == causal(frames(0, 1, 2), [2, 3, 4])


def test_earlier_keys_cut_within_a_frame_keep_each_tokens_own_key():
    """The within-frame (spatial) cut: each frame token loses the earlier tokens of its own
    frame, and keeps itself; `frame[t] -> frame[t]` cuts itself too."""
    layout = small_layout()
    assert pairs(blocked_edges("earlier frame[t] -> frame[t]", layout)) == {(3, 2), (5, 4), (7, 6)}
    with_self = pairs(blocked_edges("frame[t] -> frame[t]", layout))
    assert with_self == {(3, 2), (5, 4), (7, 6)} | {(p, p) for p in range(2, 8)}
    # A plain and a qualified term together: each keeps its own rule.
    got = pairs(blocked_edges("system, earlier frame[t] -> frame[t]", layout))
    assert got == {(3, 2), (5, 4), (7, 6)} | {(q, k) for q in range(2, 8) for k in (0, 1)}
    # `earlier` over a group after the query's: the same as without (no key sits at the query).
    assert pairs(blocked_edges("earlier video -> last", layout)) == causal([12], frames(0, 1, 2))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("video -> earlier last", "qualifies a source"),
        ("earlier -> last", "names no group"),
        ("earlier last -> last", "blocks no attention"),  # a one-token group has no earlier key
    ],
)
def test_bad_earlier_expressions_say_what_is_wrong(expression: str, message: str):
    with pytest.raises(FlowtraceError, match=message):
        blocked_edges(expression, small_layout())
