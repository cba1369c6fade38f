"""Every reference to a docs page or a README section resolves.

Checked across the repository's text files (code comments, docstrings, CRD descriptions, chart values,
Markdown):
- a relative Markdown link names a file or folder that exists, and its `#anchor`, when it has one, is a
  heading of that page;
- a plain `docs/<page>.md` names a page that exists;
- a section named in quotes after a page (`docs/model-cache.md, "Resume"`, `[x](x.md), "Layout"`,
  `the README, "Adding an engine"`) is a heading of that page.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".device-carry", ".pytest_cache", ".ruff_cache"}
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".json", ".toml", ".tpl", ".txt", ".sh", ".cfg", ".ini", ".lua"}
TEXT_NAMES = {"Makefile", "Dockerfile", ".importlinter", "run"}

FENCE = re.compile(r"^\s*(```|~~~)")
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A link followed by a quoted section: [text](page.md), "Section"
MD_LINK_SECTION = re.compile(r"\[[^\]]*\]\(([^)\s#]+\.md)\),? \"([^\"]+)\"")
PLAIN_DOC = re.compile(r"(?<![\w./-])(docs/[\w./-]*?\.md)\b")
PLAIN_DOC_SECTION = re.compile(r"(?<![\w./-])(docs/[\w./-]*?\.md),? \"([^\"]+)\"")
README_SECTION = re.compile(r"\bREADME(?:\.md)?(?:'s)?,? \"([^\"]+)\"")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def text_files() -> list[Path]:
    out = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path == Path(__file__).resolve():  # its own examples of broken references
            continue
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES):
            out.append(path)
    return sorted(out)


@cache
def headings(page: Path) -> tuple[str, ...]:
    """The page's headings as written (backticks dropped), outside fenced code."""
    found = []
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            found.append(match.group(1).replace("`", ""))
    return tuple(found)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def has_section(page: Path, name: str) -> bool:
    """A heading that is the name, or begins with it ("Kept as rendered" names "Kept as rendered, and …")."""
    wanted = name.strip().lower()
    return any(h.strip().lower().startswith(wanted) for h in headings(page))


def markdown_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out = []
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def problems_in(path: Path) -> list[str]:
    rel = path.relative_to(REPO)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return []
    found: list[str] = []
    lines = markdown_lines(path) if path.suffix == ".md" else list(enumerate(text.splitlines(), 1))
    for number, line in lines:
        where = f"{rel}:{number}"
        if path.suffix == ".md":
            for target in MD_LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                file_part, _, anchor = target.partition("#")
                page = (path.parent / file_part).resolve() if file_part else path
                if not page.exists():
                    found.append(f"{where}: link to {target}, which does not exist")
                elif anchor and page.suffix == ".md" and anchor not in {slug(h) for h in headings(page)}:
                    found.append(f"{where}: link to {target}: no heading with anchor #{anchor}")
            for target, section in MD_LINK_SECTION.findall(line):
                page = (path.parent / target).resolve()
                if page.exists() and not has_section(page, section):
                    found.append(f'{where}: {target} has no section "{section}"')
        for target in PLAIN_DOC.findall(line):
            if not (REPO / target).exists():
                found.append(f"{where}: {target} does not exist")
        for target, section in PLAIN_DOC_SECTION.findall(line):
            page = REPO / target
            if page.exists() and not has_section(page, section):
                found.append(f'{where}: {target} has no section "{section}"')
        for section in README_SECTION.findall(line):
            if not has_section(REPO / "README.md", section):
                found.append(f'{where}: README.md has no section "{section}"')
    return found


def test_docs_links_resolve() -> None:
    problems = [p for path in text_files() for p in problems_in(path)]
    assert not problems, "references that do not resolve:\n" + "\n".join(problems)


def test_the_checker_catches_a_missing_page_and_section(tmp_path: Path) -> None:
    assert has_section(REPO / "README.md", "Adding an engine")
    assert not has_section(REPO / "docs" / "README.md", "No such section here")
    assert slug("The `kubernetes` package, again!") == "the-kubernetes-package-again"
    # problems_in reports paths relative to the repository, so the broken page is written inside it.
    inside = REPO / "docs" / f"broken-{tmp_path.name}.md"
    assert not inside.exists()
    try:
        inside.write_text('[x](no-such-page.md) and docs/missing-page.md, and the README, "No such section"\n')
        found = problems_in(inside)
    finally:
        inside.unlink()
    assert any("no-such-page.md" in p for p in found)
    assert any("missing-page.md" in p for p in found)
    assert any("No such section" in p for p in found)
