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
from flowtrace.recipe import Knockout, Recipe
from flowtrace.sweep import WINDOW_RULE


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
        "recipe": recipe.name,
        "recipe_kind": type(recipe).__name__,
        "recipe_title": recipe.title,
        "recipe_source": _source(recipe.source_file),
        "chart": getattr(recipe, "chart", ""),
        "edges": json.dumps(recipe.edge_map()) if isinstance(recipe, Knockout) else "{}",
        "generate": recipe.generate if isinstance(recipe, Knockout) else 0,
        "eval_only": int(options.eval_only),
        "overlay_layers": json.dumps(getattr(recipe, "overlay_layers", [])),
        "model": home_relative(loaded.model_id),
        "model_revision": loaded.revision,
        "adapter": loaded.adapter.name,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "attn": loaded.attn,
        "data": _data(options.data),
        "data_root": str(root) if options.absolute_paths else _data(_as_named(options.data)),
        "data_kind": data_kind,
        "split": "toy held-out" if options.data == TOY_DATA else root.name,
        "tasks": json.dumps(options.tasks or []),
        "limit": options.limit or 0,
        "ratio": options.ratio or 0,
        "frames": settled.frames,
        "pooling": "-".join(map(str, loaded.adapter.video_grid(loaded, settled.frames))),
        "lora": home_relative(options.lora or ""),
        "window": settled.sweep.window,
        "window_default": WINDOW_RULE,
        "window_style": settled.sweep.style,
        "sweep": json.dumps(list(settled.sweep.layers or [])),
        "sample_mode": options.sample_mode,
        "heads": settled.sweep.heads_spec,
        "engine": engine,
        "seed": options.seed,
        "flowtrace_version": flowtrace.__version__,
        "git_commit": git_commit(),
        "device": device_name(loaded.device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "nnsight": getattr(nnsight, "__version__", "unknown"),
        "python": platform.python_version(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


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
