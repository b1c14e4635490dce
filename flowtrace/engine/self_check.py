"""The fast engine's self-check: which kind of shortcut a row takes, and how close to a full
forward it must come."""

from __future__ import annotations

import torch

from flowtrace.engine.suffix import Row

# The self-check's bound on max |Δp| between the shortcut and a full forward. float32: the
# side-by-side path's rounding reaches 5e-5 on the trained toy under deep cuts (inverse windows),
# usually under 1e-6; a shortcut that reuses the clean pass for one position too many is off by
# 1e-4 to 0.3 there.
SELF_CHECK_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}
HALF_PRECISION_TOLERANCE = 2e-3


class FastEngineFallback(UserWarning):
    """The fast engine's self-check failed: knockouts run on the reference path instead."""


def shortcut_kinds(
    row: Row, flat: bool, seq_len: int, causal: bool, forked: bool = False
) -> set[tuple]:
    """What kind of shortcut `row` takes, as the features a full forward must have confirmed.

    A first cut query is "last" for the last token alone (its position moves with every
    prompt, its computation does not). Elsewhere, where every layer's own mask is plain causal,
    it is "inside": where the suffix begins does not change what the shortcut computes, so one
    confirmed start stands for all, and a sample whose option sits one token further on needs
    no full forward. Where some layer's own mask is not causal (padding, planted routes), the
    start is named by its position. The edge pattern is the
    sequence of distinct edge sets over the row's layers from its first cut on, runs collapsed
    and a layer without cuts as -1: a window sweep is (0,), an inverse window (0, -1, 0), a
    pathway plan that changes edges per layer (0, 1, -1, 2). A row begun as a copy of
    another's stream (`suffix.forks`) is a kind of its own on each path. A row with site edits
    (patches, ablations, steering) is named by the combination it carries: whether it also cuts,
    and each edit's site, mode and whether it sits at the row's entry or later.
    """
    condition = row.condition
    slots: dict[int, int] = {}
    pattern: list[int] = []
    for layer in range(row.entry, max(condition.blocked, default=row.entry - 1) + 1):
        blocked = condition.blocked.get(layer)
        slot = -1 if blocked is None else slots.setdefault(id(blocked), len(slots))
        if not pattern or pattern[-1] != slot:
            pattern.append(slot)
    if row.start == seq_len - 1:
        start: int | str = "last"
    else:
        start = "inside" if causal else row.start
    path = ("flat" if flat else "batched", "heads" if condition.heads is not None else "all")
    kinds = {
        ("path", *path),
        ("start", start),
        ("entry", row.entry),
        ("edges", tuple(pattern)),
    }
    if condition.edits:
        features = {
            (e.site, e.mode, "entry" if e.entry == row.entry else "later") for e in condition.edits
        }
        kinds.add(("edits", bool(condition.blocked), tuple(sorted(features))))
    return kinds | {("forked", path[0])} if forked else kinds


def describe_kinds(kinds: set[tuple]) -> str:
    named = dict((k[0], k[1:]) for k in kinds)
    path, heads = named["path"]
    return (
        f"{path} path, {'some heads' if heads == 'heads' else 'all heads'}, first cut query "
        f"{named['start'][0]}, first cut layer {named['entry'][0]}, edge pattern "
        f"{named['edges'][0]}"
        + (", begun as a copy of another row" if "forked" in named else "")
        + (f", site edits {named['edits'][1]}" if "edits" in named else "")
    )
