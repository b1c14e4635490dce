"""Where the embedded default lives: the toy VideoLLM, its planted twin and their held-out clips.

Plain paths, so any layer may name them; training and the reference results are in flowtrace.toy.
"""

from pathlib import Path

EMBEDDED = Path(__file__).parent / "toy" / "embedded"
EMBEDDED_MODEL = EMBEDDED / "model"
# The same architecture trained under fixed attention routes (flowtrace.models.planted).
EMBEDDED_PLANTED = EMBEDDED / "planted"
EMBEDDED_DATA = EMBEDDED / "heldout"
