"""Where a store's numbers come from: recipe, model, data, settings, software, machine."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

import flowtrace
from flowtrace.models import LoadedModel
from flowtrace.paths import home_relative
from flowtrace.pipeline.options import TOY_DATA, RunOptions, Settled
from flowtrace.recipe import Recipe
from flowtrace.store import keys
from flowtrace.tokens.sweep import WINDOW_RULE


def provenance(
    recipe: Recipe,
    loaded: LoadedModel,
    options: RunOptions,
    data_kind: str,
    root: Path,
    settled: Settled,
    engine: str,
) -> dict[str, str | int | float]:
    import nnsight
    import transformers

    return {
        keys.RECIPE: recipe.name,
        keys.RECIPE_KIND: type(recipe).__name__,
        keys.RECIPE_TITLE: recipe.title,
        keys.RECIPE_SOURCE: _source(recipe.source_file),
        # What a kind records of itself (RecipeKind.attrs) replaces these defaults in place.
        keys.CHART: "",
        keys.EDGES: "{}",
        keys.GENERATE: 0,
        keys.EVAL_ONLY: int(options.eval_only),
        keys.OVERLAY_LAYERS: "[]",
        keys.MODEL: home_relative(loaded.model_id),
        keys.MODEL_REVISION: loaded.revision,
        keys.ADAPTER: loaded.adapter.name,
        keys.DTYPE: str(loaded.dtype).removeprefix("torch."),
        keys.ATTN: loaded.attn,
        keys.DATA: _data(options.data),
        keys.DATA_ROOT: str(root) if options.absolute_paths else _data(_as_named(options.data)),
        keys.DATA_KIND: data_kind,
        keys.SPLIT: "toy held-out" if options.data == TOY_DATA else root.name,
        keys.TASKS: json.dumps(options.tasks or []),
        keys.LIMIT: options.limit or 0,
        keys.RATIO: options.ratio or 0,
        keys.FRAMES: settled.frames,
        keys.POOLING: "-".join(map(str, loaded.adapter.video_grid(loaded, settled.frames))),
        keys.LORA: home_relative(options.lora or ""),
        keys.WINDOW: settled.sweep.window,
        keys.WINDOW_DEFAULT: WINDOW_RULE,
        keys.WINDOW_STYLE: settled.sweep.style,
        keys.SWEEP: json.dumps(list(settled.sweep.layers or [])),
        keys.SAMPLE_MODE: options.sample_mode,
        keys.HEADS: settled.sweep.heads_spec,
        keys.ENGINE: engine,
        keys.SEED: options.seed,
        keys.FLOWTRACE_VERSION: flowtrace.__version__,
        keys.GIT_COMMIT: git_commit(),
        keys.DEVICE: device_name(loaded.device),
        keys.TORCH: torch.__version__,
        keys.TRANSFORMERS: transformers.__version__,
        keys.NNSIGHT: getattr(nnsight, "__version__", "unknown"),
        keys.PYTHON: platform.python_version(),
        keys.CREATED: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    } | recipe.attrs()


def _as_named(data: str) -> str:
    """The data's root as the user wrote it (KIND:PATH → PATH)."""
    return data.split(":", 1)[1] if ":" in data else data


# Paths are stored as the user named them, a home folder as `~` (stores are shared and
# published; flowtrace expands `~` wherever it reads one back).
def _data(data: str) -> str:
    """KIND:PATH or PATH with PATH home-relative."""
    kind, sep, path = data.partition(":")
    return f"{kind}{sep}{home_relative(path)}" if sep else home_relative(data)


def _source(source: str) -> str:
    """A recipe's FILE#sha256:… with FILE home-relative."""
    file, sep, digest = source.partition("#")
    return f"{home_relative(file)}{sep}{digest}"


def git_commit() -> str:
    """The checkout's commit; in an image without .git, the one it was built from."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(flowtrace.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return commit or os.environ.get("FLOWTRACE_GIT_COMMIT", "unknown")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"
