"""`--data` values: KIND:PATH, a plain folder (TVBench layout), or a name from the user's config.

The config file (default ~/.config/flowtrace/data.toml, or $FLOWTRACE_DATA_CONFIG) maps names
to KIND:PATH once, so no path is ever edited inside the package:

    tvbench = "tvbench:/data/TVBench"
    vcg = "vcgbench:~/datasets/VCGBench"
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flowtrace.embedded import EMBEDDED_DATA
from flowtrace.errors import DataError

# Dataset kinds and the layout each expects under its root (docs/data.md has the details).
KINDS = {
    "tvbench": "json/<task>.json and video/<task>/ (FunAILab/TVBench)",
    "tvbench-open": "TVBench's folder, asked open-ended with per-task answer prompts",
    "mvbench": "json/<task>.json and video/<source>/ (OpenGVLab/MVBench)",
    "tomato": "jsons/ or data/ with <task>.json or <task>-*.parquet, and videos/ (TOMATO)",
    "longvideobench": "lvb_val.json and videos/ (longvideobench/LongVideoBench)",
    "videomme": "videomme/test-*.parquet and data/ (lmms-lab/Video-MME)",
    "vcgbench": "Benchmarking_QA/<task>.json and Test_Videos/ (Video-ChatGPT benchmark)",
    "synth": "a folder written by `flowtrace data synth` (TVBench layout)",
}
ENV_CONFIG = "FLOWTRACE_DATA_CONFIG"
_KIND_PREFIX = re.compile(r"^([a-z][a-z0-9_-]*):(.*)$", re.DOTALL)


@dataclass(frozen=True)
class DataSource:
    """A dataset on disk: which reader (`kind`) and its folder (`root`)."""

    kind: str
    root: Path
    spec: str  # the --data value as given

    @property
    def layout(self) -> str:
        """The kind of folder the reader reads ("synth" and plain folders are TVBench's)."""
        return "tvbench" if self.kind == "synth" else self.kind


def config_path() -> Path:
    """Where dataset names are looked up."""
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "flowtrace" / "data.toml"


TOY_DATA = "toy"  # the embedded held-out split


def parse_data(spec: str, config: Path | None = None) -> DataSource:
    """'toy' (the embedded held-out split), KIND:PATH, an existing folder (TVBench layout), or a
    NAME from the config file."""
    spec = str(spec)
    if spec == TOY_DATA:
        return DataSource(kind="tvbench", root=EMBEDDED_DATA, spec=spec)
    match = _KIND_PREFIX.match(spec)
    if match and match.group(1) in KINDS:
        return _source(match.group(1), match.group(2), spec)
    if Path(spec).expanduser().is_dir():
        return _source("tvbench", spec, spec)
    names = _config_names(config or config_path())
    if spec in names:
        return _named(spec, names[spec], config or config_path())
    kinds = ", ".join(KINDS)
    if Path(spec).expanduser().is_file():
        raise DataError(
            f"data={spec} is a file, not a dataset folder; pass the folder that holds the "
            f"benchmark (TVBench layout: json/<task>.json and video/), KIND:FOLDER ({kinds}), "
            "'toy' or a name from " + str(config or config_path())
        )
    if match:
        raise DataError(
            f"data={spec}: unknown dataset kind {match.group(1)!r}; write KIND:PATH with "
            f"KIND one of {kinds}"
        )
    known = f" (names there: {', '.join(sorted(names))})" if names else ""
    raise DataError(
        f"data={spec}: no such folder, and no dataset of that name in "
        f"{config or config_path()}{known}; pass 'toy', a folder, KIND:PATH ({kinds}) or a "
        "name from that file"
    )


def _source(kind: str, path: str, spec: str, base: Path | None = None) -> DataSource:
    root = Path(path).expanduser()
    if base is not None and not root.is_absolute():
        root = base / root
    if path and root.is_file():
        raise DataError(
            f"data={spec}: {root} is a file, not a folder; give {kind}:FOLDER, the folder "
            f"that holds {KINDS[kind]}"
        )
    if not path or not root.is_dir():
        raise DataError(f"data={spec}: no such folder {root}; a {kind} folder holds {KINDS[kind]}")
    return DataSource(kind=kind, root=root.absolute(), spec=spec)


def _named(name: str, value: object, config: Path) -> DataSource:
    match = _KIND_PREFIX.match(value) if isinstance(value, str) else None
    if not match or match.group(1) not in KINDS:
        raise DataError(
            f"{config}: {name} = {value!r} is not KIND:PATH; write e.g. "
            f'{name} = "tvbench:/data/TVBench" (kinds: {", ".join(KINDS)})'
        )
    # Relative paths in the file are relative to the file, not to where flowtrace runs.
    return _source(match.group(1), match.group(2), name, base=config.parent)


def _config_names(config: Path) -> dict[str, object]:
    if not config.is_file():
        return {}
    try:
        return tomllib.loads(config.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{config}: not valid TOML ({err}); fix or remove the file") from None


def video_file(attrs: Mapping[str, object], video: str) -> Path:
    """A store's `video` coordinate as a file: a relative one lies under the run's data root,
    found again from the store's `data` attr ('toy', KIND:PATH, a folder, a data.toml name)."""
    path = Path(video)
    if path.is_absolute():
        return path
    data = str(attrs.get("data", ""))
    try:
        root = parse_data(data).root if data else Path(str(attrs.get("data_root", ".")))
    except (DataError, ValueError):
        root = Path(str(attrs.get("data_root", ".")))
    return root / path
