"""The embedded default: a small LLaVA-NeXT-Video that flowtrace trains on its synthetic tasks."""

from pathlib import Path

EMBEDDED = Path(__file__).parent / "embedded"
EMBEDDED_MODEL = EMBEDDED / "model"
EMBEDDED_DATA = EMBEDDED / "heldout"
