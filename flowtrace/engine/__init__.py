"""nnsight traces over a loaded model: clean pass and knockout passes."""

from flowtrace.engine.reference import KnockoutCondition, ReferenceEngine

__all__ = ["KnockoutCondition", "ReferenceEngine"]
