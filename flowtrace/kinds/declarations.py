"""The recipe kinds: one frozen declaration per kind of analysis, as a recipe file writes it
(`recipe = Knockout(...)`). Each is a `RecipeKind`: it checks its own group names and says what
its stores record of it; `pipeline.kinds` maps it to its measure."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flowtrace.engine import KnockoutCondition
from flowtrace.errors import RecipeError
from flowtrace.store import keys
from flowtrace.tokens.edge_plans import SEPARATORS, counted_edges, with_separators
from flowtrace.tokens.edges import blocked_edges, plain_groups
from flowtrace.tokens.layout import TokenLayout
from flowtrace.tokens.names import check_expression, check_term
from flowtrace.tokens.sweep import Sweep


class RecipeKind:
    """What every recipe kind declares beside its fields (`name`, `title`, `description`,
    `source_file`): a check of the group names it uses, made when the recipe is loaded, and
    its own provenance attributes. A new kind subclasses it and registers its measure
    (`pipeline.kinds.register_kind`)."""

    name: str

    def check_groups(self, where: str) -> None:
        """Refuse group names no layout has, with the closest ones (`tokens.names`)."""

    def attrs(self) -> dict[str, Any]:
        """What its stores record of it beyond the common provenance."""
        return {}


@dataclass(frozen=True)
class Condition:
    source: str
    target: str
    layer: int  # the sweep position (window centre for style "center")
    knockout: KnockoutCondition
    edges: int  # (query, key) pairs cut per blocked layer
    heads: Sequence[int] | None = None  # the heads cut in (None: all)


@dataclass(frozen=True)
class Knockout(RecipeKind):
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

    def check_groups(self, where: str) -> None:
        if not self.edge_map():  # it would run every sample, then have nothing to draw
            raise RecipeError(
                f"{where}: `edges` is empty, so there is nothing to knock out; name at least "
                "one edge, e.g. edges=['video -> last']"
            )
        self.labels()  # every label reads `a -> b`
        for expression in self.edge_map().values():
            check_expression(expression, where)

    def attrs(self) -> dict[str, Any]:
        return {keys.EDGES: json.dumps(self.edge_map()), keys.GENERATE: self.generate}

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
        names = [g for expr in self.edge_map().values() for g in plain_groups(expr)]
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
                f"flowtrace.tokens.sweep.Sweep(window, style, layers, heads), not {sweep!r}"
            )
        out = []
        for (source, target), expr in zip(self.labels(), self.edge_map().values(), strict=True):
            if self.skip_absent and any(g not in layout.groups for g in plain_groups(expr)):
                continue
            cut = blocked_edges(expr, layout)
            edges = int(np.count_nonzero(cut))  # numpy: torch's CPU sum of a bool matrix is 100x
            blocked = torch.from_numpy(cut)
            for layer, layers, heads in sweep.steps(num_layers, num_heads):
                knockout = KnockoutCondition.window(blocked, layers, heads)
                out.append(Condition(source, target, layer, knockout, edges, heads))
        return out


@dataclass(frozen=True)
class LayerProbe(RecipeKind):
    """Logit lens at the last token, layer by layer (paper §5: layer-wise answer probability)."""

    name: str
    title: str
    top_k: int = 5
    description: str = ""
    source_file: str = field(default="", compare=False)


@dataclass(frozen=True)
class VideoLogitLens(RecipeKind):
    """Logit lens over every video token at every layer (paper §5): what does each token "say"?

    `overlay_layers` are the layers the frame-overlay figure shows (fractions of the depth).
    """

    name: str
    title: str
    top_k: int = 3
    overlay_layers: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    description: str = ""
    source_file: str = field(default="", compare=False)

    def attrs(self) -> dict[str, Any]:
        return {keys.OVERLAY_LAYERS: json.dumps(list(self.overlay_layers))}


@dataclass(frozen=True)
class AttentionMap(RecipeKind):
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

    def check_groups(self, where: str) -> None:
        check_expression(self.blocked, where)
        for name in self.groups:
            check_term(name, f"{where}: group '{name}'", expand=("frame",))

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
class FlowMap(RecipeKind):
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

    def check_groups(self, where: str) -> None:
        for name in self.groups:
            check_term(name, f"{where}: group '{name}'", expand=("frame", "option"))

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
class EffectivePathway(RecipeKind):
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

    def check_groups(self, where: str) -> None:
        for chosen in (self, *self.per_model.values()):
            for expression, _ in chosen.pathways.values():
                check_expression(expression, where, extra=(SEPARATORS,))

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


@dataclass(frozen=True)
class TraceProgram(RecipeKind):
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

    def attrs(self) -> dict[str, Any]:
        return {keys.CHART: self.chart}


# What any recipe is: a declaration of a kind, built in or registered
# (pipeline.kinds.register_kind); annotations say Recipe, load_recipe checks RecipeKind.
Recipe = RecipeKind
