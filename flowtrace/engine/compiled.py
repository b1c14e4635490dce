"""torch.compile'd twins of a model's decoder layers, for the fast engine's recompute.

Compiling the recomputed layers fuses the norms, rotary and gating that otherwise run as separate
elementwise kernels: worth its start-up cost (a minute or so per process) on a GPU, not on a CPU.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

from flowtrace.models import LoadedModel

# FLOWTRACE_COMPILE=0/1 overrides the default (on for CUDA).
COMPILE_ENV = "FLOWTRACE_COMPILE"
# Graphs per layer shape: one token (the self-check), one row of suffix tokens, several rows; with
# and without head-level masks. Beyond this, dynamo gives up and runs the layer uncompiled.
COMPILE_RECOMPILE_LIMIT = 32
# The recompute paths whose layer calls run compiled. A compiled call costs more on the host
# (dynamo's guards, the graph's launch) than an eager one: it pays where a call keeps the GPU
# busy for long (batch rows of a long suffix), not on the side-by-side path's short calls
# (benchmarks/runs/2026-12-06-h100: compiled flat calls were launch-bound).
COMPILED_PATHS = ("batched",)


def compile_default(loaded: LoadedModel) -> bool:
    setting = os.environ.get(COMPILE_ENV, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    return loaded.device.type == "cuda"


def plain_twin(module: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of `module` and its children sharing their parameters, without the
    forward wrappers nnsight installs on each instance.

    Compiling through those wrappers makes dynamo guard on every sequence length (a graph per
    length); the twin is the model's own code, which compiles to a few dynamic-shape graphs.
    """
    twin = copy.copy(module)
    twin.__dict__.pop("forward", None)
    twin._modules = {
        name: None if child is None else plain_twin(child)
        for name, child in module._modules.items()
    }
    return twin


def compiled_twins(twins: list[torch.nn.Module]) -> list[Any]:
    """Each layer's plain twin under torch.compile with dynamic shapes (rows and lengths vary)."""
    import torch._dynamo

    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, COMPILE_RECOMPILE_LIMIT)
    return [torch.compile(twin, dynamic=True) for twin in twins]
