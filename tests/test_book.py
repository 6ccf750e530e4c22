"""`make book` renders every lesson, the glossary and the teaching guide to a static site whose links all resolve."""
import html
import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_book", ROOT / "scripts" / "make_book.py")
make_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_book)

LESSONS = make_book.lesson_paths()


class _References(HTMLParser):
    """Collects every ``href`` and ``src`` attribute of a page."""

    def __init__(self):
        super().__init__()
        self.hrefs, self.srcs = [], []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "href" and value is not None:
                self.hrefs.append(value)
            elif name == "src" and value is not None:
                self.srcs.append(value)


def references(page: Path) -> _References:
    parser = _References()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def is_relative_file_link(link: str) -> bool:
    parts = urlsplit(link)
    return not parts.scheme and not parts.netloc and bool(parts.path) and not parts.path.startswith("/")


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    pages = make_book.build(out)
    return out, pages


def test_every_lesson_glossary_and_teaching_guide_has_a_page(book):
    out, pages = book
    expected = ["index.html"] + [path.with_suffix(".html").name for path in LESSONS] + ["glossary.html", "teaching.html"]
    assert pages == expected
    for page in expected:
        assert (out / page).stat().st_size > 0, page


def test_index_links_every_page_under_its_title(book):
    out, pages = book
    index = (out / "index.html").read_text(encoding="utf-8")
    linked = {urlsplit(link).path for link in references(out / "index.html").hrefs}
    assert linked == set(pages) - {"index.html"}
    for path in LESSONS:
        title = make_book.lesson_title(nbformat.read(path, as_version=4), path.stem)
        assert re.match(r"\d\d · ", title), f"{path.name}: first heading should read 'NN · 中文 / English'"
        assert f'<a href="{path.with_suffix(".html").name}">{html.escape(title)}</a>' in index


def test_every_relative_link_and_source_resolves(book):
    out, pages = book
    broken = []
    for page in pages:
        found = references(out / page)
        for link in found.hrefs + found.srcs:
            if is_relative_file_link(link) and not (out / unquote(urlsplit(link).path)).is_file():
                broken.append(f"{page}: {link}")
    assert broken == []


def test_every_page_loads_the_bundled_mathjax(book):
    # Formulas must render offline: each page loads MathJax from the book's own copy (the link test above checks
    # that the file is there), never from a CDN.
    out, pages = book
    for page in pages:
        scripts = [src for src in references(out / page).srcs if "mathjax" in src.lower()]
        assert scripts and all(src.startswith("mathjax/MathJax.js?config=") for src in scripts), (page, scripts)


def test_lesson_pages_keep_their_outputs(book):
    # Rendered as committed: every figure a lesson shows is in its page (embedded as a data URI).
    out, _ = book
    for path in LESSONS:
        figures = sum("image/png" in output.get("data", {})
                      for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"
                      for output in cell.outputs)
        page = (out / path.with_suffix(".html").name).read_text(encoding="utf-8")
        assert page.count("data:image/png;base64,") >= figures, path.name


def test_links_between_lessons_point_to_rendered_pages():
    rewritten = make_book.rewrite_links(
        '<a href="05_instance_weighting.ipynb#Check">05</a> <a href="../lessons/GLOSSARY.md">terms</a> '
        '<a href="../tlkit/data/__init__.py">code</a> <a href="https://example.org/x.ipynb">web</a>')
    assert '<a href="05_instance_weighting.html#Check">05</a>' in rewritten
    assert '<a href="glossary.html">terms</a>' in rewritten
    assert "__init__.py" not in rewritten and " code " in rewritten  # no page for it: kept as plain text
    assert '<a href="https://example.org/x.ipynb">web</a>' in rewritten
