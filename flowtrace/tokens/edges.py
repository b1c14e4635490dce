"""Readable edge sets: `video -> question`, `question, options -> last`, `frame[<t] -> frame[t]`.

`source -> target` means: queries in `target` may not attend to keys in `source`. An indexed
term `frame[...]` names the family frame_0, frame_1, …; an index may use the free variable `t`
(`t`, `<t`, `<=t`, `>t`, `>=t`), in which case the edge set is the union over every t of the
frame family, e.g. `frame[<t] -> frame[t]` blocks each frame from all earlier frames.

Causal edges include a query's own key: `frame[t] -> frame[t]` also cuts each frame token from
itself. A source term qualified `earlier` names only keys strictly before the query:
`earlier frame[t] -> frame[t]` cuts each frame token from the earlier tokens of its own frame and
keeps its own key (the within-frame, "spatial" knockout).
"""

from __future__ import annotations

import re

import numpy as np

from flowtrace.errors import FlowtraceError
from flowtrace.tokens.layout import TokenLayout

_TERM = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?:\[(?P<index>[^\]]+)\])?$")
_INDEX = re.compile(r"^(?P<op><=|>=|<|>)?\s*(?P<value>t|\d+)$")
EARLIER = "earlier"  # a source term's qualifier: keys strictly before the query only


def blocked_edges(expression: str, layout: TokenLayout) -> np.ndarray:
    """Boolean (L, L) matrix, [query, key] = True where attention is to be cut.

    Only causal edges (key before query) are kept: the causal mask already forbids the rest.
    """
    source, target = _split(expression)
    qualified = [_qualifier(term, expression) for term in source]
    source = [term for term, _ in qualified]
    strict = [term for term, earlier in qualified if earlier]
    if any(_qualifier(term, expression)[1] for term in target):
        raise FlowtraceError(
            f"edge '{expression}': `{EARLIER}` qualifies a source (the keys), e.g. "
            "`earlier frame[t] -> frame[t]`"
        )
    terms = source + target
    families = [_family(term, layout, expression) for term in terms]  # checks every name
    uses_t = any(_uses_t(term) for term in terms)
    # Only the families `t` indexes set its range; a fixed index may name another family.
    sizes = {size for term, (_, size) in zip(terms, families, strict=True) if _uses_t(term)}
    steps = range(max(sizes)) if uses_t else [None]
    if uses_t and len(sizes) != 1:
        raise FlowtraceError(f"edge '{expression}': `t` must index one family of groups")
    # Keys of plain terms are cut where key <= query, of `earlier` terms where key < query.
    plain = [term for term, earlier in qualified if not earlier]
    blocked = _block(plain, target, steps, layout, expression) & np.tri(layout.seq_len, dtype=bool)
    if strict:
        below = np.tri(layout.seq_len, k=-1, dtype=bool)
        blocked |= _block(strict, target, steps, layout, expression) & below
    if not blocked.any():
        raise FlowtraceError(
            f"edge '{expression}' blocks no attention: a source must come before its target in "
            "the sequence (e.g. `video -> question`, not `question -> video`)"
        )
    return blocked


def _block(source, target, steps, layout: TokenLayout, expression: str) -> np.ndarray:
    """(L, L) bool: every (query in target, key in source) pair, for each t of `steps`."""
    blocked = np.zeros((layout.seq_len, layout.seq_len), dtype=bool)
    if not source:
        return blocked
    for t in steps:
        keys = _runs(_positions(source, layout, t, expression))
        queries = _runs(_positions(target, layout, t, expression))
        # Groups are runs of positions: slices write a block in microseconds, where fancy
        # indexing (np.ix_) takes milliseconds per sample at video length.
        for rows in queries:
            for columns in keys:
                blocked[rows, columns] = True
    return blocked


def _qualifier(term: str, expression: str) -> tuple[str, bool]:
    """A term without its `earlier` qualifier, and whether it had one."""
    word, _, rest = term.partition(" ")
    if word != EARLIER:
        return term, False
    if not rest.strip():
        raise FlowtraceError(f"edge '{expression}': `{EARLIER}` names no group")
    return rest.strip(), True


def _runs(positions: np.ndarray) -> list[slice]:
    """Sorted positions as slices of consecutive ones."""
    if not positions.size:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [positions.size]])
    return [
        slice(int(positions[a]), int(positions[b - 1]) + 1)
        for a, b in zip(starts, ends, strict=True)
    ]


def _split(expression: str) -> tuple[list[str], list[str]]:
    parts = expression.split("->")
    if len(parts) != 2:
        raise FlowtraceError(
            f"edge '{expression}' must read `source -> target`, e.g. `video -> question`"
        )
    sides = [[term.strip() for term in part.split(",")] for part in parts]
    if any(not term for side in sides for term in side):
        raise FlowtraceError(f"edge '{expression}' has an empty group name")
    return sides[0], sides[1]


def _uses_t(term: str) -> bool:
    match = _TERM.match(term)
    return bool(match and match["index"] and "t" in match["index"])


def _family(term: str, layout: TokenLayout, expression: str) -> tuple[str | None, int]:
    match = _TERM.match(term)
    if not match:
        raise FlowtraceError(f"edge '{expression}': cannot read group '{term}'")
    if match["index"] is None:
        layout[match["name"]]  # raises with the list of known groups
        return None, 0
    name = match["name"]
    size = 0
    while f"{name}_{size}" in layout.groups:
        size += 1
    if size == 0:
        raise FlowtraceError(
            f"edge '{expression}': '{name}[…]' names no indexed groups; "
            f"known groups: {', '.join(layout.groups)}"
        )
    return name, size


def _positions(terms: list[str], layout: TokenLayout, t: int | None, expression: str) -> np.ndarray:
    chosen: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    for term in terms:
        match = _TERM.match(term)
        assert match is not None  # checked by _family
        if match["index"] is None:
            chosen.append(layout[match["name"]])
            continue
        name, size = _family(term, layout, expression)
        for i in _indices(match["index"], size, t, expression):
            chosen.append(layout[f"{name}_{i}"])
    return np.unique(np.concatenate(chosen))


def _indices(index: str, size: int, t: int | None, expression: str) -> range | list[int]:
    match = _INDEX.match(index.strip())
    if not match:
        raise FlowtraceError(
            f"edge '{expression}': index '[{index}]' must be a number or t, <t, <=t, >t, >=t"
        )
    value = t if match["value"] == "t" else int(match["value"])
    if value is None:
        raise FlowtraceError(f"edge '{expression}': internal error, t unbound")
    op = match["op"]
    if op is None:
        if not 0 <= value < size:
            raise FlowtraceError(f"edge '{expression}': index {value} outside 0..{size - 1}")
        return [value]
    bounds = {"<": (0, value), "<=": (0, value + 1), ">": (value + 1, size), ">=": (value, size)}
    lo, hi = bounds[op]
    return range(max(lo, 0), min(hi, size))


def plain_groups(expression: str) -> list[str]:
    """Plain group names an edge expression uses (indexed families are not checked)."""
    terms = [unqualified(t) for side in expression.split("->") for t in side.split(",")]
    return [t for t in terms if t and "[" not in t]


def unqualified(term: str) -> str:
    """A source term without its `earlier` qualifier."""
    term = term.strip()
    return term[len(EARLIER) :].strip() if term.startswith(f"{EARLIER} ") else term
