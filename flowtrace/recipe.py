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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowtrace.edges import EARLIER, blocked_edges
from flowtrace.engine import KnockoutCondition
from flowtrace.errors import RecipeError
from flowtrace.layout import FAMILIES, MARKERS, TokenLayout, did_you_mean, is_group_name
from flowtrace.sweep import Sweep

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


@dataclass(frozen=True)
class Condition:
    source: str
    target: str
    layer: int  # the sweep position (window centre for style "center")
    knockout: KnockoutCondition
    edges: int  # (query, key) pairs cut per blocked layer
    heads: Sequence[int] | None = None  # the heads cut in (None: all)


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
    # Leave out, per sample, edges naming a group the sample lacks (a flow map's option_D on a
    # two-option question) instead of failing the sample.
    skip_absent: bool = False
    # Greedy reply tokens generated clean and under every condition (0: the first token only).
    generate: int = 0

    def edge_map(self) -> dict[str, str]:
        if isinstance(self.edges, Mapping):
            return dict(self.edges)
        return {expr: expr for expr in self.edges}

    def labels(self) -> list[tuple[str, str]]:
        out = []
        for label in self.edge_map():
            parts = [p.strip() for p in label.split("->")]
            if len(parts) != 2 or not all(parts):
                raise RecipeError(f"recipe {self.name}: edge label '{label}' must be 'a -> b'")
            out.append((parts[0], parts[1]))
        return out

    def absent_groups(self, layout: TokenLayout) -> list[str]:
        """Plain group names the edges use that this layout lacks (an open-ended prompt's
        options)."""
        names = [g for expr in self.edge_map().values() for g in _group_names(expr)]
        return [g for g in dict.fromkeys(names) if g not in layout.groups]

    def conditions(
        self,
        layout: TokenLayout,
        num_layers: int,
        sweep: Sweep,
        num_heads: int | None = None,
    ) -> list[Condition]:
        """Each edge cut at each step of `sweep`: in the window's layers, in its heads (a
        per-head sweep needs the model's `num_heads`)."""
        if not isinstance(sweep, Sweep):
            raise TypeError(
                "conditions(layout, num_layers, sweep): give the sweep settings as one "
                f"flowtrace.sweep.Sweep(window, style, layers, heads), not {sweep!r}"
            )
        out = []
        for (source, target), expr in zip(self.labels(), self.edge_map().values(), strict=True):
            if self.skip_absent and any(g not in layout.groups for g in _group_names(expr)):
                continue
            cut = blocked_edges(expr, layout)
            edges = int(np.count_nonzero(cut))  # numpy: torch's CPU sum of a bool matrix is 100x
            blocked = torch.from_numpy(cut)
            for layer, layers, heads in sweep.steps(num_layers, num_heads):
                knockout = KnockoutCondition.window(blocked, layers, heads)
                out.append(Condition(source, target, layer, knockout, edges, heads))
        return out


@dataclass(frozen=True)
class LayerProbe:
    """Logit lens at the last token, layer by layer (paper §5: layer-wise answer probability)."""

    name: str
    title: str
    top_k: int = 5
    description: str = ""
    source_file: str = field(default="", compare=False)


@dataclass(frozen=True)
class VideoLogitLens:
    """Logit lens over every video token at every layer (paper §5): what does each token "say"?

    `overlay_layers` are the layers the frame-overlay figure shows (fractions of the depth).
    """

    name: str
    title: str
    top_k: int = 3
    overlay_layers: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    description: str = ""
    source_file: str = field(default="", compare=False)


@dataclass(frozen=True)
class AttentionMap:
    """Attention mass between token groups per layer and head, clean and with `blocked` cut in
    every layer (paper §4: where attention goes, and how a knockout reroutes it).

    `groups` are group names; `frame[*]` expands to every frame.
    """

    name: str
    title: str
    blocked: str = "frame[<t] -> frame[t]"
    groups: tuple[str, ...] = ("system", "frame[*]", "question", "options", "prompt_tail", "last")
    description: str = ""
    source_file: str = field(default="", compare=False)

    def group_names(self, num_frames: int) -> list[str]:
        """Group names with `frame[*]` expanded; unknown names fail on the first layout."""
        names = []
        for name in self.groups:
            if name.endswith("[*]"):
                names += [f"{name[:-3]}_{i}" for i in range(num_frames)]
            else:
                names.append(name)
        return names


@dataclass(frozen=True)
class FlowMap:
    """Every ordered pair of token groups (source before target) knocked out at every layer
    window: the whole layer × source × target map, of which the paper's sweeps are slices.

    `groups` are in sequence order; `frame[*]` and `option[*]` expand to the model's frames and
    the data's options.
    """

    name: str
    title: str
    groups: tuple[str, ...] = ("system", "frame[*]", "question", "option[*]", "prompt_tail", "last")
    description: str = ""
    source_file: str = field(default="", compare=False)

    def group_names(self, num_frames: int, letters: Sequence[str]) -> list[str]:
        names = []
        for name in self.groups:
            if name == "frame[*]":
                names += [f"frame_{t}" for t in range(num_frames)]
            elif name == "option[*]":
                names += [f"option_{letter}" for letter in letters]
            else:
                names.append(name)
        return names

    def knockout(self, num_frames: int, letters: Sequence[str]) -> Knockout:
        """The map as one knockout recipe: an edge `a -> b` for each group a before group b."""
        names = self.group_names(num_frames, letters)
        edges = {f"{a} -> {b}": f"{a} -> {b}" for i, a in enumerate(names) for b in names[i + 1 :]}
        return Knockout(
            self.name, self.title, edges, self.description, self.source_file, skip_absent=True
        )


@dataclass(frozen=True)
class EffectivePathway:
    """Keep only the pathways that matter, cut the rest (paper §6), against random pruning.

    `pathways` maps a label to (edge expression, kept layers): the edges are cut in every layer
    outside the kept layers (None: cut in every layer). Kept layers are fractions [start, stop)
    of the depth, so one recipe fits models of any depth, or an explicit list (or range) of layer
    indices, for a pathway found on one model. With `cut_rest`, every other counted edge is cut
    too: only the listed edges in their kept layers stay (a found pathway). `per_model` maps a
    model id (`toy`, `planted`) to the recipe that model runs instead of this one's pathways.
    Edges are counted, as in the reference code, among causal (query, key) pairs from the first
    video token on.
    """

    name: str
    title: str
    pathways: Mapping[str, tuple[str, tuple[float, float] | Sequence[int] | None]]
    # Random baseline: this share of the counted edges per layer; None matches the pathway's cut.
    random_ratio: float | None = None
    description: str = ""
    source_file: str = field(default="", compare=False)
    cut_rest: bool = False
    per_model: Mapping[str, EffectivePathway] = field(default_factory=dict)

    def for_model(self, model_id: str) -> EffectivePathway:
        """The recipe `model_id` runs: its `per_model` entry, else this one."""
        chosen = self.per_model.get(model_id)
        return self if chosen is None else dataclasses.replace(chosen, name=self.name)

    def kept_layers(self, label: str, num_layers: int) -> range | list[int]:
        keep = self.pathways[label][1]
        if keep is None:
            return range(0)
        if isinstance(keep, (list, range)):
            layers = list(keep)
            if any(not 0 <= layer < num_layers for layer in layers):
                raise RecipeError(
                    f"recipe {self.name}: pathway '{label}' keeps layers {layers}, but the model "
                    f"has {num_layers} (0-{num_layers - 1}); this pathway was found on another "
                    "model: rerun `flowtrace pathways` on this one"
                )
            return layers
        return range(round(keep[0] * num_layers), round(keep[1] * num_layers))

    def plan(self, layout: TokenLayout, num_layers: int) -> dict[int, torch.Tensor]:
        """Edges cut per layer (layers with nothing to cut are left out)."""
        layout = with_separators(layout)
        edges = {label: blocked_edges(expr, layout) for label, (expr, _) in self.pathways.items()}
        rest = counted_edges(layout).numpy() if self.cut_rest else None
        plan = {}
        for layer in range(num_layers):
            cut = np.zeros((layout.seq_len, layout.seq_len), dtype=bool)
            if rest is not None:
                cut |= rest
                for label, blocked in edges.items():
                    if layer in self.kept_layers(label, num_layers):
                        cut &= ~blocked
            else:
                for label, blocked in edges.items():
                    if layer not in self.kept_layers(label, num_layers):
                        cut |= blocked
            if cut.any():
                plan[layer] = torch.from_numpy(cut)
        return plan


# Counted tokens of no named group (the "USER:" between the video and the query): a found pathway
# may keep or cut their edges like any group's, so EffectivePathway's edges may name them.
SEPARATORS = "separators"
_SEPARATED = ("video", MARKERS, "query", "prompt_tail", "last")


def with_separators(layout: TokenLayout) -> TokenLayout:
    """The layout with the group `separators`: positions from the first video token on that lie
    in none of video, video_markers, query, prompt_tail, last."""
    if SEPARATORS in layout.groups:
        return layout
    start = int(layout["video"][0])
    named = np.zeros(layout.seq_len, dtype=bool)
    for name in _SEPARATED:
        if name in layout.groups:
            named[layout.groups[name]] = True
    rest = np.flatnonzero(~named & (np.arange(layout.seq_len) >= start)).astype(np.int64)
    return dataclasses.replace(layout, groups={**layout.groups, SEPARATORS: rest})


@dataclass(frozen=True)
class TraceProgram:
    """An analysis written as a function of one sample's `flowtrace.program.Trace`, returning
    named arrays with named dims: `{"name": (("dim", …), array)}`."""

    name: str
    title: str
    program: Callable[..., Mapping[str, tuple[Sequence[str], Any]]]  # Trace -> named arrays
    # Labels of named dims (e.g. "group": [...]); dims without labels are numbered, and a
    # `layer` dim of the model's depth gets the layer numbers.
    coords: Mapping[str, Sequence[object]] = field(default_factory=dict)
    open_ended: bool = False  # whether it takes open-ended samples
    chart: str = ""  # the figure registered under this name (flowtrace.plots), else a generic one
    # Whether it runs with remote/serve: False where it calls the model's modules itself
    # (a fast path), which only a local model allows.
    remote: bool = True
    # "eager" where its own traces read attention weights (`attention.output[1]`): the run loads
    # eager attention (t.attention_mass needs no such declaration).
    attn: str | None = None
    gradients: bool = False  # whether it takes gradients (programs run under inference mode)
    description: str = ""
    source_file: str = field(default="", compare=False)


def counted_edges(layout: TokenLayout) -> torch.Tensor:
    """(L, L) bool: causal pairs whose query and key are both at or after the first video token."""
    start = int(layout["video"][0])
    region = torch.ones(layout.seq_len, layout.seq_len, dtype=torch.bool).tril()
    region[:start] = False
    region[:, :start] = False
    return region


def random_plan(
    counted: torch.Tensor, per_layer: dict[int, int], generator: torch.Generator
) -> dict[int, torch.Tensor]:
    """Cut `per_layer[layer]` edges drawn uniformly from `counted` in each layer."""
    pairs = counted.nonzero()
    plan = {}
    for layer, n in sorted(per_layer.items()):
        chosen = pairs[torch.randperm(len(pairs), generator=generator)[:n]]
        cut = torch.zeros_like(counted)
        cut[chosen[:, 0], chosen[:, 1]] = True
        if n:
            plan[layer] = cut
    return plan


def _group_names(expression: str) -> list[str]:
    """Plain group names an edge expression uses (indexed families are not checked)."""
    terms = [_unqualified(t) for side in expression.split("->") for t in side.split(",")]
    return [t for t in terms if t and "[" not in t]


def _unqualified(term: str) -> str:
    """A source term without its `earlier` qualifier (flowtrace.edges)."""
    term = term.strip()
    return term[len(EARLIER) :].strip() if term.startswith(f"{EARLIER} ") else term


Recipe = (
    Knockout
    | LayerProbe
    | VideoLogitLens
    | EffectivePathway
    | AttentionMap
    | FlowMap
    | TraceProgram
)


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
            term = _unqualified(term) if i == 0 else term.strip()  # keys may be `earlier …`
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
