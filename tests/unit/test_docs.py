"""The README and docs/: every relative link resolves (file and heading anchor), the README stays short, every
page the issue names exists and is listed in docs/index.md."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("design", "commands", "data-pipeline", "training", "retrieval", "captions", "serving", "evaluation",
         "cluster", "models", "benchmarks", "development")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def without_code(text: str) -> str:
    """The text outside fenced code blocks and inline code (links there are examples, not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (not hyphens), spaces to hyphens."""
    h = re.sub(r"[`*_]", "", heading.strip().lower())
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors(path: Path) -> set:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: p.name)
def test_every_relative_link_resolves(md):
    broken = []
    for target in LINK.findall(without_code(md.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
        elif path and ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{target} (outside the repository: a clone does not have it)")
    assert not broken, f"{md.name}: " + "; ".join(broken)


def test_the_readme_is_short_and_the_pages_exist():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 300
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    for page in PAGES:
        assert (ROOT / "docs" / f"{page}.md").is_file(), page
        assert f"]({page}.md)" in index, f"docs/index.md does not list {page}.md"
    listed = set(re.findall(r"\]\(([\w-]+)\.md\)", index))
    assert listed >= {p.stem for p in (ROOT / "docs").glob("*.md")} - {"index"}


def test_the_link_check_finds_a_broken_link(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("# Title\n\nsee [a](missing.md) and [b](#title) and [c](#nope)\n\n```\n[d](ignored.md)\n```\n")
    links = LINK.findall(without_code(md.read_text()))
    assert links == ["missing.md", "#title", "#nope"]
    assert slug("Data-size curve (`ipl curve`)") == "data-size-curve-ipl-curve"
    assert "title" in anchors(md) and "nope" not in anchors(md)
