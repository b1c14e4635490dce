"""Recipes: one short declaration per analysis, loaded from `recipes/*.py`.

A recipe file defines a module-level `recipe`. A knockout recipe names its edges (readable
expressions over token groups, see `flowtrace.edges`); the runner sweeps them over layer windows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flowtrace.edges import blocked_edges
from flowtrace.engine import KnockoutCondition
from flowtrace.engine.masks import sweep_layers, window_layers
from flowtrace.errors import FlowtraceError
from flowtrace.layout import TokenLayout

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


@dataclass(frozen=True)
class Condition:
    source: str
    target: str
    layer: int  # the sweep position (window centre for style "center")
    knockout: KnockoutCondition
    edges: int  # (query, key) pairs cut per blocked layer


@dataclass(frozen=True)
class Knockout:
    """Attention knockout of named edges, swept over layer windows (paper §3)."""

    name: str
    title: str
    # label "source -> target" (the cube's coordinates) -> edge expression; a plain list uses
    # each expression as its own label.
    edges: Mapping[str, str] | Sequence[str]
    description: str = ""
    source_file: str = field(default="", compare=False)

    def edge_map(self) -> dict[str, str]:
        if isinstance(self.edges, Mapping):
            return dict(self.edges)
        return {expr: expr for expr in self.edges}

    def labels(self) -> list[tuple[str, str]]:
        out = []
        for label in self.edge_map():
            parts = [p.strip() for p in label.split("->")]
            if len(parts) != 2 or not all(parts):
                raise FlowtraceError(f"recipe {self.name}: edge label '{label}' must be 'a -> b'")
            out.append((parts[0], parts[1]))
        return out

    def conditions(
        self,
        layout: TokenLayout,
        num_layers: int,
        window: int,
        style: str,
        sweep: tuple[int, int] | None = None,
    ) -> list[Condition]:
        out = []
        for (source, target), expr in zip(self.labels(), self.edge_map().values(), strict=True):
            blocked = torch.from_numpy(blocked_edges(expr, layout))
            for layer in sweep_layers(num_layers, sweep):
                layers = window_layers(layer, num_layers, window, style)
                knockout = KnockoutCondition.window(blocked, layers)
                out.append(Condition(source, target, layer, knockout, int(blocked.sum())))
        return out


@dataclass(frozen=True)
class LayerProbe:
    """Logit lens at the last token, layer by layer (paper §5: layer-wise answer probability)."""

    name: str
    title: str
    top_k: int = 5
    description: str = ""
    source_file: str = field(default="", compare=False)


Recipe = Knockout | LayerProbe


def load_recipe(path: str | Path) -> Recipe:
    """Load the `recipe` object of a recipe file (a path, or a name from the shipped recipes/)."""
    file = Path(path)
    if not file.exists() and not file.suffix and (RECIPES_DIR / f"{file}.py").exists():
        file = RECIPES_DIR / f"{file}.py"
    if not file.is_file():
        shipped = sorted(p.stem for p in RECIPES_DIR.glob("*.py")) if RECIPES_DIR.exists() else []
        hint = f"; shipped recipes: {', '.join(shipped)}" if shipped else ""
        raise FlowtraceError(f"recipe file '{path}' does not exist{hint}")
    spec = importlib.util.spec_from_file_location(f"flowtrace_recipe_{file.stem}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe = getattr(module, "recipe", None)
    if not isinstance(recipe, Knockout | LayerProbe):
        raise FlowtraceError(
            f"recipe file '{path}' defines no `recipe = Knockout(...)` or `LayerProbe(...)`"
        )
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    return dataclasses.replace(recipe, source_file=f"{file}#sha256:{digest}")
