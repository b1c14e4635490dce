"""torch.compile'd twins of a model's decoder layers, for the fast engine's recompute.

Compiling the recomputed layers fuses the norms, rotary and gating that otherwise run as separate
elementwise kernels: worth its start-up cost (a minute or so per process) on a GPU, not on a CPU.
"""

from __future__ import annotations

import copy
import os
import warnings
import weakref
from typing import Any

import torch

from flowtrace.engine.self_check import FastEngineFallback
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
# Compiling where the run pays it back: on a GPU it costs 20-60 s per process and saves about
# 0.1 s per sample of the paper's four sweeps at the 7B shape (0.82 against 0.93 s,
# benchmarks/runs/2026-12-02-h200). A run left to the default therefore starts eager, so its
# first results come in seconds, and turns compiling on after its first samples only where
# enough samples are left to repay it.
EAGER_FIRST_SAMPLES = 4
COMPILE_PAYS_FROM = 256  # samples left to run


def compile_deferred(setting: bool | None) -> bool:
    """Whether compiling, where on, waits until the run shows it pays (`EAGER_FIRST_SAMPLES`):
    the run left `compile` to its default and FLOWTRACE_COMPILE is unset."""
    return setting is None and not os.environ.get(COMPILE_ENV, "").strip()


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


# Per model, the decoder layers without nnsight's per-instance wrappers (what torch.compile
# needs) and their compiled versions, shared by every engine on the model in this process. Each
# engine compiling twins of its own would add graphs on the layers' one code object, guarded on
# the new modules, until dynamo's recompile limit left later engines' layers uncompiled: a
# notebook's fifth run, or a pass after four solo runs, ran at eager speed.
SHARED_TWINS: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, list[Any]]] = (
    weakref.WeakKeyDictionary()
)


class RecomputeLayers:
    """The decoder layers the recompute calls: the model's own (when a chunk hooks them), their
    plain twins (sharing the weights) or the twins compiled, each list made on first use. A
    compiler failure turns compiling off for the rest of the engine's life."""

    def __init__(self, loaded: LoadedModel, compile: bool) -> None:
        self.loaded = loaded
        self.compile = compile
        self.compiled_calls = 0  # layer calls that ran compiled, since the engine was made
        self.deferred = False  # compiling waits for `resume` (`defer`)

    def defer(self) -> bool:
        """Run eagerly until `resume`; whether there was compiling to defer."""
        self.deferred, self.compile = self.compile, False
        return self.deferred

    def resume(self) -> None:
        """Compile from the next recompute on, if `defer` held compiling back."""
        if self.deferred:
            self.compile, self.deferred = True, False

    def pick(self, hooked: bool, compiled: bool) -> tuple[list[Any], list[Any]]:
        """(the layers to call, their eager versions) for one recompute: a hooked chunk calls
        the model's own modules (its hooks sit on them); the rest call the twins, compiled
        where `compiled` and compiling is still on."""
        originals = self.loaded.layers(self.loaded.model)
        if hooked:
            return originals, originals
        shared = SHARED_TWINS.setdefault(self.loaded.model, {})
        if "eager" not in shared:
            shared["eager"] = [plain_twin(layer) for layer in originals]
        eager = shared["eager"]
        if not (self.compile and compiled):
            return eager, eager
        if "compiled" not in shared:
            shared["compiled"] = compiled_twins(eager)
        return shared["compiled"], eager

    def call(
        self, layers: list[Any], eager: list[Any], index: int, *args: Any, **kwargs: Any
    ) -> Any:
        """Layer `index` of `layers`, or of `eager` where the compiled one fails."""
        # Eager: patched rows, compile off, or a compile failure earlier in this recompute.
        if layers is eager or not self.compile:
            return eager[index](*args, **kwargs)
        try:
            out = layers[index](*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - any compiler failure: run uncompiled
            self.compile = False
            warnings.warn(
                FastEngineFallback(
                    f"fast engine on {self.loaded.model_id}: torch.compile failed on decoder "
                    f"layer {index} ({type(error).__name__}: {str(error)[:200]}); the recompute "
                    f"runs uncompiled from here on ({COMPILE_ENV}=0 skips compiling)"
                ),
                stacklevel=2,
            )
            return eager[index](*args, **kwargs)
        self.compiled_calls += 1
        return out
