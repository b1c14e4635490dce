"""A fast-path knockout call queued on the device, read back (and checked) when its result is
asked for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from flowtrace.engine.capture import CleanCapture
from flowtrace.engine.condition import KnockoutCondition
from flowtrace.engine.masks import AllowedEdges
from flowtrace.engine.reference import Launched
from flowtrace.engine.suffix import Row


class CheckingEngine(Protocol):
    """What a queued call needs of the engine that queued it (the fast engine): its state of
    broken shortcuts, the self-check and the fall-back to the reference path."""

    _broken: str
    used: set[str]

    def _check_kinds(self, inputs, rows, paths, out, capture) -> str: ...

    def _fall_back(self, inputs, conditions, reason: str) -> torch.Tensor: ...


class PendingKnockout(Launched):
    """A fast-path knockout call queued on the device: `result()` waits for it, refuses a
    starved query, confirms each new kind of shortcut against a full forward, and falls back
    to the reference path where one differs."""

    def __init__(
        self,
        engine: CheckingEngine,
        inputs: dict[str, torch.Tensor],
        conditions: Sequence[KnockoutCondition],
        capture: CleanCapture,  # held: the queued recompute reads it until `done`
        rows: list[Row],
        paths: dict[int, tuple[bool, bool]],
        out: list[torch.Tensor | None],
        stacked: torch.Tensor,
        allowed: AllowedEdges,
        done: torch.cuda.Event | None,
    ) -> None:
        super().__init__(None)
        self.engine, self.inputs, self.conditions = engine, inputs, conditions
        self.capture, self.rows, self.paths, self.out = capture, rows, paths, out
        self.stacked, self.allowed, self.done = stacked, allowed, done

    @torch.no_grad()
    def _finish(self) -> torch.Tensor:
        engine = self.engine
        if self.done is not None:
            self.done.synchronize()
            # Made on the knockout stream, read on the caller's: its memory must not go back to
            # the knockout stream's pool while the caller's reads are still queued.
            self.stacked.record_stream(torch.cuda.current_stream(self.stacked.device))
        self.allowed.check()
        if engine._broken:  # an earlier sample's check failed after this one was queued
            return self._fallback(engine._broken)
        failure = engine._check_kinds(self.inputs, self.rows, self.paths, self.out, self.capture)
        if failure:
            engine._broken = failure
            return self._fallback(failure)
        self.used = {"fast"}
        engine.used.add("fast")
        return self.stacked

    def _fallback(self, reason: str) -> torch.Tensor:
        self.used, self.note = {"reference"}, reason
        return self.engine._fall_back(self.inputs, self.conditions, reason)
