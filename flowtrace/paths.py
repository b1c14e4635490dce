"""Paths as flowtrace names them to people: names derived from stores, and paths without the
user's home folder (`~/…`) or the data root's absolute prefix."""

from __future__ import annotations

import re
from pathlib import Path

STORE_SUFFIX = ".zarr"


def store_stem(store: Path | str) -> str:
    """A store's name without its `.zarr` suffix, every other dot and space kept
    (`exp.a.zarr` -> `exp.a`, `threshold_0.25.zarr` -> `threshold_0.25`, `runs` -> `runs`).

    `Path.stem` would cut `exp.a` (a store folder without the suffix) to `exp`, the name
    another store's figure has."""
    name = Path(store).name
    stem = name.removesuffix(STORE_SUFFIX)
    return stem or name


def home_relative(path: str) -> str:
    """`path` as `~/…` where it lies in the user's home folder; anything else (a Hub id, a
    relative path, a path elsewhere) unchanged. flowtrace expands `~` wherever it reads one."""
    text = str(path)
    home = _home()
    if home is None or not text:
        return text
    expanded = Path(text).expanduser()
    if not expanded.is_absolute():
        return text
    try:
        rest = expanded.relative_to(home)
    except ValueError:
        return text
    return "~" if rest == Path() else f"~/{rest.as_posix()}"


def shown(text: str, root: Path | str | None = None, named: str | None = None) -> str:
    """`text` (a failed sample's reason, a provenance line) as a report shows it: the data
    root's absolute path as the run named it (`named`: the store's `data_root`), and the home
    folder as `~`."""
    if root is not None and named is not None:
        absolute = str(Path(root).expanduser().absolute())
        if absolute != "/" and absolute != named:
            text = _at_path_start(absolute).sub(lambda _: named.rstrip("/") + "/", text)
    home = _home()
    if home is not None and str(home) != "/":
        text = _at_path_start(str(home)).sub("~/", text)
    return text


def _at_path_start(prefix: str) -> re.Pattern[str]:
    """`prefix/` where a path starts (not inside a longer one: /data/root/x is not /root/x)."""
    return re.compile(r"(?<![\w.~/-])" + re.escape(prefix.rstrip("/")) + "/")


def _home() -> Path | None:
    try:
        return Path.home()
    except RuntimeError:  # no HOME and no passwd entry
        return None
