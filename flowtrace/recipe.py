"""Recipes: one short declaration per analysis, loaded from `recipes/*.py`.

A recipe file defines a module-level `recipe`. A knockout recipe names its edges (readable
expressions over token groups, see `flowtrace.edges`); the runner sweeps them over layer windows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import re
import traceback
from collections.abc import Sequence
from pathlib import Path

from flowtrace.edge_plans import SEPARATORS, counted_edges, random_plan, with_separators
from flowtrace.edges import unqualified
from flowtrace.errors import RecipeError
from flowtrace.layout import FAMILIES, did_you_mean, is_group_name
from flowtrace.recipe_kinds import (
    AttentionMap,
    Condition,
    EffectivePathway,
    FlowMap,
    Knockout,
    LayerProbe,
    Recipe,
    TraceProgram,
    VideoLogitLens,
)

# The declarations live in flowtrace.recipe_kinds and the counted-edge plans in
# flowtrace.edge_plans; recipes and users import every name from here.
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
    if not isinstance(recipe, Recipe):
        raise RecipeError(
            f"recipe file '{path}' defines no `recipe = …` of a recipe kind "
            "(Knockout, LayerProbe, VideoLogitLens, EffectivePathway, AttentionMap, FlowMap, "
            "TraceProgram)"
        )
    check_groups(recipe, f"recipe file '{path}'")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    return dataclasses.replace(recipe, source_file=f"{file}#sha256:{digest}")


_TERM = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?:\[(?P<index>[^\]]+)\])?$")


def check_groups(recipe: Recipe, where: str = "") -> None:
    """Refuse a recipe whose edges or groups name a group no layout has (`vidoe -> last`),
    before any model is loaded, with the closest names."""
    where = where or f"recipe {recipe.name}"
    if isinstance(recipe, Knockout):
        if not recipe.edge_map():  # it would run every sample, then have nothing to draw
            raise RecipeError(
                f"{where}: `edges` is empty, so there is nothing to knock out; name at least "
                "one edge, e.g. edges=['video -> last']"
            )
        recipe.labels()  # every label reads `a -> b`
        for expr in recipe.edge_map().values():
            _check_expression(expr, where)
    elif isinstance(recipe, EffectivePathway):
        for chosen in (recipe, *recipe.per_model.values()):
            for expr, _ in chosen.pathways.values():
                _check_expression(expr, where, extra=(SEPARATORS,))
    elif isinstance(recipe, AttentionMap):
        _check_expression(recipe.blocked, where)
        for name in recipe.groups:
            _check_term(name, f"{where}: group '{name}'", expand=("frame",))
    elif isinstance(recipe, FlowMap):
        for name in recipe.groups:
            _check_term(name, f"{where}: group '{name}'", expand=("frame", "option"))


def _check_expression(expression: str, where: str, extra: Sequence[str] = ()) -> None:
    sides = expression.split("->")
    if len(sides) != 2:
        raise RecipeError(
            f"{where}: edge '{expression}' must read `source -> target`, e.g. `video -> question`"
        )
    for i, side in enumerate(sides):
        for term in side.split(","):
            term = unqualified(term) if i == 0 else term.strip()  # keys may be `earlier …`
            if term not in extra:
                _check_term(term, f"{where}: edge '{expression}'")


def _check_term(term: str, where: str, expand: Sequence[str] = ()) -> None:
    """One group term: a plain name, `family[index]`, or (in a group list) `family[*]`."""
    if not term:
        raise RecipeError(f"{where} has an empty group name")
    match = _TERM.match(term)
    if not match:
        raise RecipeError(f"{where}: cannot read group '{term}'; {did_you_mean(term)}")
    name, index = match["name"], match["index"]
    if index is None:
        if not is_group_name(name):
            raise RecipeError(f"{where} names unknown group '{name}'; {did_you_mean(name)}")
    elif index == "*" and expand:
        if name not in expand:
            raise RecipeError(
                f"{where}: only {', '.join(f + '[*]' for f in expand)} expand here; "
                f"{did_you_mean(name, family=True)}"
            )
    elif name not in FAMILIES:
        raise RecipeError(
            f"{where} names unknown group family '{name}[…]'; {did_you_mean(name, family=True)}"
        )


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
