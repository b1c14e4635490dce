"""The embedded default: a small LLaVA-NeXT-Video that flowtrace trains on its synthetic tasks."""

from flowtrace.embedded import EMBEDDED, EMBEDDED_DATA, EMBEDDED_MODEL, EMBEDDED_PLANTED

__all__ = ["EMBEDDED", "EMBEDDED_DATA", "EMBEDDED_MODEL", "EMBEDDED_PLANTED"]
