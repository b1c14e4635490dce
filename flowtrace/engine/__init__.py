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


def make_engine(name: str, loaded: LoadedModel, batch_size: int = 8) -> ReferenceEngine:
    """The knockout engine called `name` (`--engine`)."""
    if name not in ENGINES:
        raise OptionError("engine", f"{name!r}: choose one of {', '.join(ENGINES)}")
    return ENGINES[name](loaded, batch_size=batch_size)
