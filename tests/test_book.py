"""`make book` renders every lesson, the glossary and the teaching guide to a static site whose links all resolve."""
import functools
import html
import importlib
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
CHINESE = make_book.chinese_lesson_paths()
# Chinese editions of the markdown pages (the teaching guide, lessons/zh/TEACHING.md → zh/teaching.html).
CHINESE_MARKDOWN = make_book.chinese_markdown_pages()


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
    assert pages[:len(expected)] == expected
    chinese = [f"{make_book.ZH}/{path.with_suffix('.html').name}" for path in make_book.chinese_lesson_paths()]
    chinese_guides = [f"{make_book.ZH}/{page}" for page in CHINESE_MARKDOWN.values()]
    rest = pages[len(expected):]
    assert [page for page in rest if page.startswith(make_book.ZH + "/")] == (
        [f"{make_book.ZH}/index.html"] + chinese + chinese_guides if chinese else [])
    assert all(page.startswith((make_book.API_DIR + "/", make_book.ZH + "/")) for page in rest)
    for page in expected + (chinese_guides if chinese else []):
        assert (out / page).stat().st_size > 0, page


def test_index_links_every_page_under_its_title(book):
    out, pages = book
    index = (out / "index.html").read_text(encoding="utf-8")
    linked = {urlsplit(link).path for link in references(out / "index.html").hrefs}
    english = {page for page in pages if not page.startswith((make_book.API_DIR + "/", make_book.ZH + "/"))}
    assert linked == english - {"index.html"} | {make_book.API_INDEX} | ({f"{make_book.ZH}/index.html"} if CHINESE else set())
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
            if is_relative_file_link(link) and not ((out / page).parent / unquote(urlsplit(link).path)).is_file():
                broken.append(f"{page}: {link}")
    assert broken == []


def test_every_page_loads_the_bundled_mathjax(book):
    # Formulas must render offline: each page loads MathJax from the book's own copy (the link test above checks
    # that the file is there), never from a CDN.
    out, pages = book
    for page in pages:
        if page == f"{make_book.API_DIR}/index.html":
            continue  # pdoc's list of modules: no formulas
        scripts = [src for src in references(out / page).srcs if "mathjax" in src.lower()]
        assert scripts and all(re.fullmatch(r"(\.\./)*mathjax/MathJax\.js\?config=.*", src) for src in scripts), (page, scripts)
        assert (out / page).parent.joinpath(urlsplit(scripts[0]).path).resolve().is_file(), page


def test_no_page_loads_anything_from_the_network(book):
    out, pages = book
    remote = []
    for page in pages:
        text = (out / page).read_text(encoding="utf-8")
        remote += [f"{page}: {src}" for src in references(out / page).srcs if re.match(r"(https?:)?//", src)]
        remote += [f"{page}: {link}" for link in re.findall(r'<link[^>]*href="((?:https?:)?//[^"]*)"', text)]
        remote += [f"{page}: @import {url}" for url in re.findall(r"@import\s+(?:url\()?[\"']?((?:https?:)?//[^\"')]*)", text)]
    assert remote == []


def test_every_public_name_has_an_api_entry(book):
    import tlkit

    out, _ = book
    assert set(make_book.api_modules()) >= {"tlkit"} | {f"tlkit.{name}" for name in tlkit._SUBPACKAGES}
    missing = []
    for module_name in make_book.api_modules():
        module = importlib.import_module(module_name)
        public = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
        page = out / make_book.API_DIR / (module_name.replace(".", "/") + ".html")
        text = page.read_text(encoding="utf-8")
        for name in public:
            if isinstance(getattr(module, name), type(module)):
                continue  # a subpackage: its own page
            if f'id="{name}"' not in text:
                missing.append(f"{module_name}.{name}")
    assert missing == []


def test_api_entries_link_the_lessons_and_lessons_link_the_api(book):
    out, _ = book
    metrics = (out / make_book.API_DIR / "tlkit" / "metrics.html").read_text(encoding="utf-8")
    assert '<a href="../../04_measuring_shift.html">04</a>' in metrics  # mmd_test: "Used in lesson 04"
    for path in LESSONS:
        notebook = nbformat.read(path, as_version=4)
        page = out / path.with_suffix(".html").name
        hrefs = references(page).hrefs
        assert make_book.API_INDEX in hrefs, path.name
        shown = re.findall(r"show_source\(\s*(tl\.[\w.]+)\s*\)", "\n".join(
            cell.source for cell in notebook.cells if cell.cell_type == "code"))
        for target in shown:
            link = make_book.api_link(target.removeprefix("tl."), api_anchors())
            assert link in hrefs, (path.name, target)
            api_page, anchor = link.split("#")
            assert f'id="{anchor}"' in (out / api_page).read_text(encoding="utf-8"), link


@functools.cache
def api_anchors() -> dict[str, str]:
    """Every API entry's link, read from pdoc's model of the package (as the builder does)."""
    import pdoc.doc

    anchors = {}
    for name in make_book.api_modules():
        prefix = name.removeprefix("tlkit").lstrip(".")
        for member in pdoc.doc.Module.from_name(name).members.values():
            nested = member.own_members if isinstance(member, pdoc.doc.Class) else []
            for entry in [member, *nested]:
                if not entry.name.startswith("_"):
                    anchors[f"{prefix}.{entry.qualname}".lstrip(".")] = (
                        f"{make_book.API_DIR}/{name.replace('.', '/')}.html#{entry.qualname}")
    return anchors


def test_formulas_reach_the_api_pages_in_mathjax_delimiters(book):
    out, _ = book
    meta = (out / make_book.API_DIR / "tlkit" / "meta.html").read_text(encoding="utf-8")
    # markdown must not eat the TeX escapes: \{ survives, no <em> inside a formula
    assert r"$S = \{(x_i, y_i)\}_{i=1}^{NK}$" in meta
    formulas = re.findall(r"\$\$.+?\$\$|\$[^$\n]+?\$", meta, flags=re.S)
    assert formulas and not any("<em>" in formula for formula in formulas)


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


def test_docstrings_use_one_math_syntax():
    # pdoc renders markdown docstrings: formulas are $inline$ and $$display$$, never reStructuredText's math roles.
    rst_math = [f"{path.relative_to(ROOT)}:{number}" for path in sorted((ROOT / "tlkit").rglob("*.py"))
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if re.search(r":math:`|\.\. math::", line)]
    assert rst_math == []


@pytest.mark.skipif(not CHINESE, reason="no Chinese edition yet")
def test_each_page_switches_to_its_other_language_edition(book):
    out, _ = book
    chinese_index = {urlsplit(link).path for link in references(out / make_book.ZH / "index.html").hrefs}
    for path in CHINESE:
        page = path.with_suffix(".html").name
        assert f"{make_book.ZH}/{page}" in references(out / page).hrefs, page
        assert f"../{page}" in references(out / make_book.ZH / page).hrefs, page
        assert page in chinese_index, page
        assert "../glossary.html" in chinese_index and "../index.html" in chinese_index
        assert f"../{make_book.API_INDEX}" in references(out / make_book.ZH / page).hrefs, page  # the API reference too


@pytest.mark.skipif(not (CHINESE and CHINESE_MARKDOWN), reason="no Chinese teaching guide yet")
def test_the_chinese_teaching_guide_has_its_page_and_language_switch(book):
    out, _ = book
    chinese_index = {urlsplit(link).path for link in references(out / make_book.ZH / "index.html").hrefs}
    chinese_lessons = {path.with_suffix(".html").name for path in CHINESE}
    for source, page in CHINESE_MARKDOWN.items():
        hrefs = {urlsplit(link).path for link in references(out / make_book.ZH / page).hrefs}
        assert page in chinese_index and f"../{page}" not in chinese_index, page  # the index lists the Chinese guide
        assert f"{make_book.ZH}/{page}" in references(out / page).hrefs, page      # English page → 中文
        assert f"../{page}" in hrefs, page                                          # Chinese page → English
        assert {"index.html", f"../{make_book.API_INDEX}", "../glossary.html"} <= hrefs, page
        # its lessons are the Chinese editions, in the same folder; nothing points at an English lesson page
        lessons = {link for link in hrefs if re.fullmatch(r"(\.\./)?\d\d_[\w-]+\.html", link)}
        assert lessons and lessons <= chinese_lessons, sorted(lessons - chinese_lessons)
        title = make_book.first_heading((make_book.LESSONS / make_book.ZH / source).read_text(encoding="utf-8"))
        assert f">{html.escape(title)}</a>" in (out / make_book.ZH / "index.html").read_text(encoding="utf-8")


def test_links_of_the_chinese_edition_reach_the_shared_pages():
    rewritten = make_book.rewrite_links('<a href="05_instance_weighting.ipynb">05</a> <a href="../GLOSSARY.md">术语表</a>',
                                        root="../")
    assert rewritten == '<a href="05_instance_weighting.html">05</a> <a href="../glossary.html">术语表</a>'
    # the teaching guide: TEACHING.md beside a Chinese lesson is the Chinese guide (if there is one), ../TEACHING.md
    # the English one; the API reference and the contents pages are kept as they are
    guide = "teaching.html" if "TEACHING.md" in CHINESE_MARKDOWN else "../teaching.html"
    rewritten = make_book.rewrite_links('<a href="TEACHING.md#x">指南</a> <a href="../TEACHING.md">guide</a> '
                                        '<a href="../api/tlkit.html">API</a> <a href="../index.html">en</a>', root="../")
    assert rewritten == (f'<a href="{guide}#x">指南</a> <a href="../teaching.html">guide</a> '
                         '<a href="../api/tlkit.html">API</a> <a href="../index.html">en</a>')
    assert make_book.rewrite_links('<a href="TEACHING.md">guide</a>') == '<a href="teaching.html">guide</a>'
