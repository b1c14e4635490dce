"""The embedded default: a small LLaVA-NeXT-Video that flowtrace trains on its synthetic tasks."""

from pathlib import Path

EMBEDDED = Path(__file__).parent / "embedded"
EMBEDDED_MODEL = EMBEDDED / "model"
# The same architecture trained under fixed attention routes (flowtrace.models.planted).
EMBEDDED_PLANTED = EMBEDDED / "planted"
EMBEDDED_DATA = EMBEDDED / "heldout"
