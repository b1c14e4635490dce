"""The README and docs/ hold together: every relative link reaches a file (and, for `#anchor`
links to a markdown page, one of its headings), and the README stays a short guide that keeps
the two commands CI and users copy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL_AND_RUN = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "
    "flowtrace run recipes/cross_frame.py"
)
TEST_COMMAND = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && '
    "ruff check . && ruff format --check . && pytest"
)
README_MAX_LINES = 250

# [text](target) and ![alt](target); the target stops at whitespace or the closing bracket.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def unfenced(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `#` there is a comment, not a heading)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return kept


def prose(text: str) -> str:
    """The text outside code blocks and inline code (links there are not links)."""
    return "\n".join(re.sub(r"`[^`]*`", "", line) for line in unfenced(text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup and punctuation dropped, lower case, spaces to
    hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on a page, with GitHub's -1, -2 … for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in unfenced(page.read_text()):
        found = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not found:
            continue
        base = slug(found.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(page: Path) -> list[str]:
    """The relative links of `page` that reach no file, or no heading of a markdown page."""
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target} (no file {shown(resolved)})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {shown(resolved)})")
    return broken


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: {broken_links(page)}"


def test_a_broken_link_or_anchor_is_found(tmp_path: Path):
    """The check itself: a missing file and a missing heading are both reported, a good link and
    an anchor with punctuation in its heading are not."""
    (tmp_path / "other.md").write_text("# Other\n\n## Planted routes: a model's `paths` (known)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Read the results\n\n"
        "[ok](other.md) [ok](other.md#planted-routes-a-models-paths-known)\n"
        "[ok](#read-the-results)\n"
        "[gone](missing.md) [bad](other.md#no-such-heading) [bad](#nowhere)\n"
        "```\n[in code](also-missing.md)\n```\n`[inline](inline-missing.md)`\n"
        "[web](https://example.org/x.md)\n"
    )
    broken = broken_links(page)
    assert [b.split(" ")[0] for b in broken] == [
        "missing.md",
        "other.md#no-such-heading",
        "#nowhere",
    ]


def test_slug_matches_github_on_headings_in_these_docs():
    """Hand-checked anchors of headings with code, punctuation and repeats."""
    assert slug("`flowtrace check STORE`") == "flowtrace-check-store"
    assert slug("Results on the embedded toys (fresh test split: 128 samples, seed 40004)") == (
        "results-on-the-embedded-toys-fresh-test-split-128-samples-seed-40004"
    )
    assert slug("The paper's models") == "the-papers-models"
    assert slug("`--data`") == "--data"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_section_heading_twice(page: Path):
    """A page's sections (`## `) are each written once: two of a name split what belongs
    together (docs/errors.md had two "## Stores") and leave the second unreachable by its
    anchor."""
    sections = [line for line in unfenced(page.read_text()) if line.startswith("## ")]
    twice = sorted({s for s in sections if sections.count(s) > 1})
    assert not twice, f"{page.relative_to(ROOT)} repeats {twice}"


def test_the_readme_is_a_short_guide_with_both_commands():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines"
    assert INSTALL_AND_RUN in lines  # a line of its own, as users copy it
    assert TEST_COMMAND in lines  # .ci/run runs this line's tail
    run_script = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND.split(". .venv/bin/activate && ", 1)[1] in run_script


def test_every_recipe_is_named_in_the_readme():
    """Each recipe file under recipes/ can be found from the README's recipe table."""
    text = (ROOT / "README.md").read_text()
    missing = [
        p.name for p in sorted((ROOT / "recipes").glob("*.py")) if f"recipes/{p.name}" not in text
    ]
    assert not missing, f"README.md's recipe table lacks {missing}"


def test_pathways_help_says_what_it_does_not_its_history():
    """`flowtrace pathways --help` describes the command and its options; dated rules and
    internal names belong to docs/history.md and docs/pathways.md."""
    from typer.testing import CliRunner

    from flowtrace.cli import app

    shown = CliRunner().invoke(app, ["pathways", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "--find" in shown.output and "--selection" in shown.output
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", shown.output), shown.output
    assert "FRESH_SEEDS" not in shown.output
