"""The documents hold together: every relative link in README.md and docs/*.md names a file that exists
(and, with a #fragment into a Markdown file, a heading there), every docs/ page is reachable from the
README, the README stays short, and docs/layout.md's table of import rules is pyproject.toml's contracts."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def anchors(path: Path) -> set[str]:
    """GitHub's ids of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", path.read_text())
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in text.splitlines() if line.startswith("#")}


def links(path: Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", path.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: are not checked


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document):
    broken = []
    for target in links(document):
        name, _, fragment = target.partition("#")
        file = (document.parent / name).resolve() if name else document
        if not file.exists() or (fragment and file.suffix == ".md" and fragment not in anchors(file)):
            broken.append(target)
    assert not broken, f"{document.relative_to(ROOT)}: links that resolve to nothing: {broken}"


def test_the_readme_stays_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move details into docs/ and link them"


def test_every_doc_is_reachable_from_the_readme():
    reached, todo = set(), [ROOT / "README.md"]
    while todo:
        document = todo.pop()
        for target in links(document):
            file = (document.parent / target.partition("#")[0]).resolve()
            if file.suffix == ".md" and file.is_relative_to(ROOT / "docs") and file not in reached and file.exists():
                reached.add(file)
                todo.append(file)
    unreached = [p.name for p in DOCUMENTS[1:] if p.resolve() not in reached]
    assert not unreached, f"docs/ files no link from the README leads to: {unreached}"


def test_the_layer_table_states_the_import_contracts():
    """docs/layout.md's table of rules is [tool.importlinter] in pyproject.toml, row for row."""
    tomllib = pytest.importorskip("tomllib")
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layout = (ROOT / "docs" / "layout.md").read_text().split("## The rules\n", 1)[1].split("\n## ", 1)[0]
    cells = ([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
             for line in layout.splitlines() if line.startswith("| "))
    rows = {row[0]: row[1:] for row in cells if len(row) == 4}
    rows.pop("contract", None)
    assert sorted(rows) == sorted(contract["name"] for contract in contracts)
    for contract in contracts:
        kind, applies_to, rule = rows[contract["name"]]
        assert kind == contract["type"], contract["name"]
        if kind == "layers":
            stated = [layer.replace("\\|", "|").replace("`", "") for layer in applies_to.split(" > ")]
            assert stated == contract["layers"], contract["name"]
        else:
            assert applies_to.replace("`", "").split(", ") == contract["source_modules"], contract["name"]
            assert rule.replace("`", "").split(", ") == contract["forbidden_modules"], contract["name"]
