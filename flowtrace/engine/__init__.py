"""nnsight traces over a loaded model: clean pass and knockout passes."""

from flowtrace.engine.condition import KnockoutCondition
from flowtrace.engine.fast import FastEngine, FastEngineFallback
from flowtrace.engine.reference import ReferenceEngine
from flowtrace.errors import OptionError
from flowtrace.models import LoadedModel

ENGINES = {"fast": FastEngine, "reference": ReferenceEngine}

__all__ = [
    "ENGINES",
    "FastEngine",
    "FastEngineFallback",
    "KnockoutCondition",
    "ReferenceEngine",
    "make_engine",
]


def make_engine(
    name: str, loaded: LoadedModel, batch_size: int = 8, compile: bool | None = None
) -> ReferenceEngine:
    """The knockout engine called `name`; `compile` reaches the fast engine only (None: its
    default, on for CUDA)."""
    if name not in ENGINES:
        raise OptionError("engine", f"{name!r}: choose one of {', '.join(ENGINES)}")
    if name == "fast":
        return FastEngine(loaded, batch_size=batch_size, compile=compile)
    return ENGINES[name](loaded, batch_size=batch_size)
