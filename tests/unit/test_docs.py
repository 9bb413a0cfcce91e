"""The documentation house: a short README for users, and links that lead somewhere.

The README is read in five minutes by someone who has never seen txmon; history, commit
hashes and issue numbers belong in bench/RUNS.md and docs/decisions/, not there.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 300

# A commit hash quoted as code: `1a570c3`, 7 to 40 hex digits (at least one a decimal digit,
# so that a word made of the letters a-f in backticks is not taken for one).
COMMIT_IN_BACKTICKS = re.compile(r"`(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}`")
ISSUE_REFERENCE = re.compile(r"\bissues?[ -]#?\d+\b|#\d+\b", re.IGNORECASE)
# [text](target) and ![alt](target); the target stops at whitespace or the closing paren.
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def documentation_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """Every link target in a Markdown file that points into the repository."""
    text = path.read_text(encoding="utf-8")
    targets = (match.group(1) for match in MARKDOWN_LINK.finditer(text))
    return [t for t in targets if not EXTERNAL.match(t) and not t.startswith("#")]


def test_readme_is_short_enough_to_read_in_five_minutes():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


def test_readme_quotes_no_commit_hashes():
    found = COMMIT_IN_BACKTICKS.findall(README.read_text(encoding="utf-8"))
    assert not found, f"README.md quotes commit hashes {found}: history goes to bench/RUNS.md"


def test_readme_refers_to_no_issues():
    found = ISSUE_REFERENCE.findall(README.read_text(encoding="utf-8"))
    assert not found, f"README.md refers to {found}: say what the code does, not where it came from"


@pytest.mark.parametrize("path", documentation_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(path: Path):
    broken = []
    for target in relative_links(path):
        file_part = unquote(target.split("#", 1)[0])
        if file_part and not (path.parent / file_part).exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def test_the_patterns_catch_what_they_are_meant_to():
    assert COMMIT_IN_BACKTICKS.search("at `1a570c3`, the demo")
    assert COMMIT_IN_BACKTICKS.search("`d90a687e3c2b0f5a8c1e2b3d4f5a6b7c8d9e0f1a`")
    assert not COMMIT_IN_BACKTICKS.search("`deadbeefcafe`, `v0001` and `a1b2c3` are not hashes")
    assert ISSUE_REFERENCE.search("notes on issue 8") and ISSUE_REFERENCE.search("the issue-4 goal")
    assert not ISSUE_REFERENCE.search("a known issue with the driver")
    assert relative_links(README)  # the README does link into docs/
