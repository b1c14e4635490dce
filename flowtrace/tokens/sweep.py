"""What a knockout sweep cuts: the window of layers at each sweep position, and in which heads.

One `Sweep` value carries the four settings from the command line (`--window`, `--window-style`,
`--sweep`, `--heads`) or `RunOptions(sweep=…)` to the recipe that builds the conditions. It is
checked here only: each field on its own when it is made, against a model's depth and heads by
`resolve`. Errors are `OptionError`s naming the field. Vocabulary: docs/design.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from flowtrace.errors import OptionError

WindowStyle = Literal["center", "inverse", "top_down", "bottom_up"]
WINDOW_STYLES: tuple[str, ...] = get_args(WindowStyle)

# The reference code runs a window of 9 layers on every model it analyses (28, 32 and 40 layers
# deep), so real models get 9 whatever their depth. Only toy-sized models (the embedded toys have
# 8 layers; released video LLM backbones have 18 or more) get a window scaled to their depth,
# where 9 would cover every layer.
REFERENCE_WINDOW = 9
FIXED_WINDOW_FROM = 16  # layers; below this the window is scaled
WINDOW_RULE = (
    f"{REFERENCE_WINDOW} layers (the reference code's window) for models of {FIXED_WINDOW_FROM} "
    "layers or more; shallower models get 9/32 of their depth, rounded, made odd (8 layers: 3)"
)

Heads = tuple[int, ...] | None  # the heads one condition cuts in (None: every head)


def default_window(num_layers: int) -> int:
    """The window a sweep uses unless told: see WINDOW_RULE."""
    if num_layers >= FIXED_WINDOW_FROM:
        return REFERENCE_WINDOW
    scaled = round(num_layers * REFERENCE_WINDOW / 32)
    return max(1, scaled if scaled % 2 else scaled + 1)


@dataclass(frozen=True)
class Sweep:
    """A layer sweep (paper §3): at each position, cut in a window of layers, in some heads.

    `window`: layers cut per step (None: `default_window` of the model's depth). `style`: where
    the window sits around the position, as the reference code's styles. `layers`: the positions
    START, STOP (stop excluded; "4-20" reads the same; None: every layer). `heads`: "all", a list
    of heads cut together ((0, 5, 7) or "0,5,7"), or "sweep": each head alone (a `head` dim).
    """

    window: int | None = None
    style: WindowStyle = "center"
    layers: tuple[int, int] | None = None
    heads: str | Sequence[int] = "all"  # made "all", "sweep" or a sorted tuple

    def __post_init__(self) -> None:
        window = self.window
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
            raise OptionError("window", f"{window!r}: give a whole number of layers")
        if window is not None and window < 1:
            raise OptionError("window", f"{window}: must be at least 1")
        if self.style not in WINDOW_STYLES:
            raise OptionError("style", f"{self.style!r}: choose {', '.join(WINDOW_STYLES)}")
        object.__setattr__(self, "layers", _layer_range(self.layers))
        object.__setattr__(self, "heads", _head_choice(self.heads))

    @property
    def per_head(self) -> bool:
        """Each head cut alone: the cube gains a `head` dim."""
        return self.heads == "sweep"

    @property
    def heads_spec(self) -> str:
        """`heads` as the flag writes it: all, sweep or 0,5,7 (the store's `heads` attribute)."""
        return self.heads if isinstance(self.heads, str) else ",".join(map(str, self.heads))

    def resolve(self, num_layers: int, num_heads: int | None = None) -> Sweep:
        """This sweep on a model of `num_layers` layers (and `num_heads` heads, when given):
        checked against them, with the window settled."""
        window = default_window(num_layers) if self.window is None else self.window
        if window > num_layers:
            raise OptionError("window", f"{window}: must be between 1 and {num_layers}")
        if self.layers is not None and self.layers[1] > num_layers:
            start, stop = self.layers
            raise OptionError(
                "layers",
                f"{start}-{stop}: need 0 <= start < stop <= {num_layers} (the model's layers)",
            )
        if num_heads is not None and isinstance(self.heads, tuple) and max(self.heads) >= num_heads:
            raise OptionError(
                "heads",
                f"{self.heads_spec}: use all, sweep, or head indices such as 0,5,7 "
                f"(this model has heads 0-{num_heads - 1})",
            )
        return self if window == self.window else dataclasses.replace(self, window=window)

    def steps(
        self, num_layers: int, num_heads: int | None = None
    ) -> Iterator[tuple[int, tuple[int, ...], Heads]]:
        """(position, layers cut, heads cut) for each sweep step, checked against the model; a
        per-head sweep needs `num_heads`."""
        sweep = self.resolve(num_layers, num_heads)
        if sweep.per_head and num_heads is None:
            raise OptionError("heads", "sweep: each head alone needs the model's number of heads")
        head_sets: list[Heads] = (
            [(h,) for h in range(num_heads or 0)]
            if sweep.per_head
            else [None if sweep.heads == "all" else sweep.heads]  # type: ignore[list-item]
        )
        start, stop = sweep.layers or (0, num_layers)
        for layer in range(start, stop):
            cut = sweep.window_at(layer, num_layers)
            for heads in head_sets:
                yield layer, cut, heads

    def window_at(self, layer: int, num_layers: int) -> tuple[int, ...]:
        """Layers cut when the sweep stands at `layer`, as the reference code's window styles."""
        window = default_window(num_layers) if self.window is None else self.window
        center = range(max(0, layer - window // 2), min(num_layers, layer + (window + 1) // 2))
        match self.style:  # checked when the sweep was made
            case "center":
                return tuple(center)
            case "inverse":
                return tuple(i for i in range(num_layers) if i not in center)
            case "top_down":
                return tuple(range(layer, num_layers))
            case "bottom_up":
                return tuple(range(0, layer + 1))


def _layer_range(layers: tuple[int, int] | Sequence[int] | str | None) -> tuple[int, int] | None:
    """START, STOP from a pair or "START-STOP"; refused unless 0 <= start < stop."""
    if layers is None:
        return None
    try:
        start, stop = (int(x) for x in (layers.split("-") if isinstance(layers, str) else layers))
    except (TypeError, ValueError):
        raise OptionError("layers", f"{layers}: write START-STOP, e.g. 4-20") from None
    if not 0 <= start < stop:
        raise OptionError("layers", f"{start}-{stop}: need 0 <= start < stop")
    return start, stop


def _head_choice(heads: str | Sequence[int]) -> str | tuple[int, ...]:
    """all, sweep, or the sorted distinct heads of "0,5,7" / (0, 5, 7)."""
    if heads in ("all", "sweep"):
        return heads  # type: ignore[return-value]
    try:
        items = heads.split(",") if isinstance(heads, str) else list(heads)
        chosen = tuple(sorted({int(h) for h in items}))
    except (TypeError, ValueError):
        chosen = ()
    if not chosen or chosen[0] < 0:
        raise OptionError("heads", f"{heads}: use all, sweep, or head indices such as 0,5,7")
    return chosen
