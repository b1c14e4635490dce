"""Group names as recipes write them, checked against the vocabulary before any model loads:
an edge expression's terms (`frame[<t]`, `earlier video`, `option_B`) and a group list's
(`frame[*]`), with the closest names where one is unknown."""

from __future__ import annotations

import re
from collections.abc import Sequence

from flowtrace.errors import RecipeError
from flowtrace.tokens.edges import unqualified
from flowtrace.tokens.layout import FAMILIES, did_you_mean, is_group_name

TERM = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?:\[(?P<index>[^\]]+)\])?$")


def check_expression(expression: str, where: str, extra: Sequence[str] = ()) -> None:
    sides = expression.split("->")
    if len(sides) != 2:
        raise RecipeError(
            f"{where}: edge '{expression}' must read `source -> target`, e.g. `video -> question`"
        )
    for i, side in enumerate(sides):
        for term in side.split(","):
            term = unqualified(term) if i == 0 else term.strip()  # keys may be `earlier …`
            if term not in extra:
                check_term(term, f"{where}: edge '{expression}'")


def check_term(term: str, where: str, expand: Sequence[str] = ()) -> None:
    """One group term: a plain name, `family[index]`, or (in a group list) `family[*]`."""
    if not term:
        raise RecipeError(f"{where} has an empty group name")
    match = TERM.match(term)
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
