"""The README stays a front door and no link of README.md or docs/*.md is broken.

A relative link must name a file or folder that exists; a `#anchor` (alone, or after a
Markdown file) must match a heading of that file under GitHub's slug rules: lowercase,
spaces to '-', punctuation other than '-' and '_' dropped, a repeated heading numbered
-1, -2, ... Links inside code (fenced blocks, `inline`) are not links and are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 350

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w: letters, digits and '_' (Unicode letters too)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeats numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_targets(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image of a Markdown text, code left out."""
    targets = []
    for number, line in prose_lines(text):
        line = INLINE_CODE.sub("code", line)
        targets += [(number, target) for target in LINK.findall(line)]
        reference = REFERENCE.match(line)
        if reference:
            targets.append((number, reference.group(1)))
    return targets


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the relative links of one Markdown file (empty: nothing)."""
    problems = []
    for number, target in link_targets(path.read_text(encoding="utf-8")):
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue  # external (http:, mailto:, ...) or empty
        file_part, _, anchor = target.partition("#")
        file_part = file_part.split("?", 1)[0]
        where = f"{path.relative_to(root)}:{number}: {target}"
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{where}: no such file {resolved.relative_to(root) if resolved.is_relative_to(root) else resolved}")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_readme_is_a_front_door() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move details to docs/"


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Which masks to check: confidence without GT", "which-masks-to-check-confidence-without-gt"),
        ("Storage for 100k+ images", "storage-for-100k-images"),
        ("Set-up: two commands", "set-up-two-commands"),
        ("GraphNet path (scribbles and boxes)", "graphnet-path-scribbles-and-boxes"),
        ("wsss — weakly-supervised segmentation", "wsss--weakly-supervised-segmentation"),
        ("The `run_batch` loop", "the-run_batch-loop"),
    ],
)
def test_slug_follows_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_broken_links_are_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## A section\n\n## A section\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n"
        "[ok](docs/page.md#a-section) [ok](docs/page.md#a-section-1) [ok](#title) [web](https://example.org/x)\n"
        "[gone](docs/missing.md) ![gone](docs/missing.png) [bad anchor](docs/page.md#nowhere) [bad](#no-such)\n"
        "`[code](not/a/link.md)`\n"
        "```\n[fenced](not/a/link.md)\n```\n"
        "[ref]: docs/also-missing.md\n",
        encoding="utf-8",
    )
    problems = broken_links(readme, root=tmp_path)
    assert [p.split(": ")[1] for p in problems] == [
        "docs/missing.md", "docs/missing.png", "docs/page.md#nowhere", "#no-such", "docs/also-missing.md",
    ]
