"""docs/design.md stays true to the code: every module, file and name it cites in backticks
exists, and its table of rooms names every folder and top-level module of the package."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flowtrace"
DESIGN = (ROOT / "docs" / "design.md").read_text()
MODULES = {
    p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
}
TOPS = {m.split(".")[0] for m in MODULES}


def cited() -> list[str]:
    """Backticked spans naming a file (`x/y.py`) or a dotted name rooted in a flowtrace module
    (`tokens.sweep.default_window`, `flowtrace.engine.condition.Edit`,
    `pipeline/options.settle`)."""
    out = []
    for span in re.findall(r"`([^`\n]+)`", DESIGN):
        token = span.split("(")[0].strip().removeprefix("flowtrace.").removeprefix("flowtrace/")
        if re.fullmatch(r"[\w/]+\.py", token) or (
            re.fullmatch(r"[a-z_][\w/]*(\.\w+)+", token)
            and token.split("/")[0].split(".")[0] in TOPS
        ):
            out.append(span)
    return out


def resolves(span: str) -> bool:
    token = span.split("(")[0].strip().removeprefix("flowtrace.").removeprefix("flowtrace/")
    if token.endswith(".py"):
        return (PACKAGE / token).exists() or (ROOT / token).exists()
    parts = token.replace("/", ".").split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        if module in MODULES:
            obj = importlib.import_module(f"flowtrace.{module}")
            for attr in parts[i:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


def test_every_name_the_design_cites_exists():
    names = cited()
    assert len(names) > 30, names  # the check reads the document's citations at all
    missing = [name for name in names if not resolves(name)]
    assert not missing, f"docs/design.md cites names the code lacks: {missing}"


def test_the_design_table_names_every_room():
    table = "\n".join(line for line in DESIGN.splitlines() if line.startswith("|"))
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    files = {p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("__")}
    absent = sorted(r for r in rooms if f"{r}/" not in table) + sorted(
        f for f in files if f not in table
    )
    assert not absent, f"docs/design.md's table leaves out {absent}"


def test_the_checks_can_fail():
    assert not resolves("tokens.no_such_module.name") and not resolves("engine.fast.NoSuchName")
    assert resolves("engine.condition.KnockoutCondition")
