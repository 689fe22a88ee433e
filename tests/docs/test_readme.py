"""The README is the front door: short, opening with the two commands, and every link into docs/ lands on a page
and a heading that exist (mkdocs build --strict checks the site's own links; the README is not part of the site)."""

import re
from pathlib import Path

from markdown.extensions.toc import slugify

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _anchors(page: Path) -> set[str]:
    """The ids MkDocs gives the page's headings (its toc extension's default slugify), fenced code left out."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    headings = re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in headings}


def test_the_readme_is_short_and_opens_with_the_two_commands():
    assert len(README.splitlines()) <= 200
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == ["make run", "make test"]


def test_every_readme_link_into_docs_reaches_a_page_and_heading():
    links = re.findall(r"\]\((docs/[^)#]+)(?:#([^)]+))?\)", README)
    assert len(links) >= 10
    for path, anchor in links:
        page = REPO / path
        assert page.is_file(), path
        assert not anchor or anchor in _anchors(page), (path, anchor, sorted(_anchors(page)))
