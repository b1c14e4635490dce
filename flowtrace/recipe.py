"""Recipes: one short declaration per analysis, loaded from `recipes/*.py`.

A recipe file defines a module-level `recipe`. A knockout recipe names its edges (readable
expressions over token groups, see `flowtrace.tokens.edges`); the runner sweeps them over layer
windows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import traceback
from pathlib import Path

from flowtrace.errors import RecipeError
from flowtrace.kinds.declarations import (
    AttentionMap,
    Condition,
    EffectivePathway,
    FlowMap,
    Knockout,
    LayerProbe,
    Recipe,
    RecipeKind,
    TraceProgram,
    VideoLogitLens,
)
from flowtrace.tokens.edge_plans import SEPARATORS, counted_edges, random_plan, with_separators

# The declarations live in flowtrace.kinds.declarations and the counted-edge plans in
# flowtrace.tokens.edge_plans; recipes and users import every name from here.
__all__ = [
    "RECIPES_DIR",
    "SEPARATORS",
    "AttentionMap",
    "Condition",
    "EffectivePathway",
    "FlowMap",
    "Knockout",
    "LayerProbe",
    "Recipe",
    "RecipeKind",
    "TraceProgram",
    "VideoLogitLens",
    "check_groups",
    "counted_edges",
    "load_recipe",
    "load_recipes",
    "pass_members",
    "random_plan",
    "recipe_files",
    "with_separators",
]

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(path: str | Path) -> Recipe:
    """Load the `recipe` object of a recipe file (a path, or a name from the shipped recipes/)."""
    file = Path(path)
    if not file.exists() and not file.suffix and (RECIPES_DIR / f"{file}.py").exists():
        file = RECIPES_DIR / f"{file}.py"
    if not file.is_file():
        shipped = sorted(p.stem for p in RECIPES_DIR.glob("*.py")) if RECIPES_DIR.exists() else []
        hint = f"; shipped recipes: {', '.join(shipped)}" if shipped else ""
        raise RecipeError(f"recipe file '{path}' does not exist{hint}")
    spec = importlib.util.spec_from_file_location(f"flowtrace_recipe_{file.stem}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        code = f" ({err.text.strip()!r})" if err.text and err.text.strip() else ""
        raise RecipeError(
            f"recipe file '{path}', line {err.lineno}: {err.msg}{code}; fix the Python there"
        ) from None
    except Exception as err:  # the recipe's own code failed: point at its line, not ours
        frames = traceback.extract_tb(err.__traceback__)
        lines = [f.lineno for f in frames if Path(f.filename).resolve() == file.resolve()]
        where = f", line {lines[-1]}" if lines else ""
        raise RecipeError(
            f"recipe file '{path}'{where}: {type(err).__name__}: {err}; fix the recipe there"
        ) from None
    recipe = getattr(module, "recipe", None)
    if not isinstance(recipe, RecipeKind):
        raise RecipeError(
            f"recipe file '{path}' defines no `recipe = …` of a recipe kind "
            "(Knockout, LayerProbe, VideoLogitLens, EffectivePathway, AttentionMap, FlowMap, "
            "TraceProgram, or one registered with flowtrace.pipeline.kinds.register_kind)"
        )
    check_groups(recipe, f"recipe file '{path}'")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    return dataclasses.replace(recipe, source_file=f"{file}#sha256:{digest}")


def check_groups(recipe: Recipe, where: str = "") -> None:
    """Refuse a recipe whose edges or groups name a group no layout has (`vidoe -> last`),
    before any model is loaded, with the closest names (each kind's `check_groups`)."""
    recipe.check_groups(where or f"recipe {recipe.name}")


def recipe_files(folder: Path = RECIPES_DIR) -> list[Path]:
    """The recipe files of a folder (the shipped ones by default), pass files left out."""
    return [p for p in sorted(Path(folder).glob("*.py")) if pass_members(p) is None]


def load_recipes(path: str | Path) -> list[Recipe]:
    """The recipes of a recipe file, or of a pass file: a file whose `recipes = [...]` lists
    recipe files (shipped names, or paths relative to the pass file) to run in one pass."""
    file = Path(path)
    if not file.exists() and not file.suffix and (RECIPES_DIR / f"{file}.py").exists():
        file = RECIPES_DIR / f"{file}.py"
    names = pass_members(file) if file.is_file() else None
    if names is None:
        return [load_recipe(path)]
    out = []
    for name in names:
        member = file.parent / name if (file.parent / name).is_file() else Path(name)
        out.append(load_recipe(member))
    return out


def pass_members(file: Path) -> list[str] | None:
    """The recipe files a pass file names (`recipes = ["a.py", "b", …]`), or None for a recipe
    file. Read without running the file: a pass holds only that list."""
    import ast

    try:
        tree = ast.parse(file.read_text(), filename=str(file))
    except SyntaxError:
        return None  # load_recipe reports it with the line
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "recipes" for t in node.targets
        ):
            try:
                names = ast.literal_eval(node.value)
            except ValueError:
                raise RecipeError(
                    f"pass file '{file}': `recipes` must be a list of recipe file names"
                ) from None
            if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
                raise RecipeError(
                    f"pass file '{file}': `recipes` must be a list of recipe file names"
                )
            return list(names)
    return None
