"""Render the course as a static HTML site, readable in any browser without Jupyter.

Every lesson ``lessons/NN_slug.ipynb`` is rendered as committed (with its outputs; nothing is executed) by nbconvert's
HTML exporter to ``NN_slug.html``, and its Chinese edition ``lessons/zh/NN_slug.ipynb`` to ``zh/NN_slug.html`` with a
contents page of its own (``zh/index.html``); every page of either edition links to its counterpart (the language
switch, 中文 / English); ``lessons/GLOSSARY.md`` and ``lessons/TEACHING.md`` become ``glossary.html`` and
``teaching.html``, and the Chinese teaching guide ``lessons/zh/TEACHING.md`` becomes ``zh/teaching.html`` (linked from
``zh/index.html``, with the same language switch to and from ``teaching.html``; the glossary is bilingual and has one
page); ``index.html`` links every page, with each lesson's title read from its notebook's first heading.
Links between lessons (``01_why_transfer.ipynb``, ``GLOSSARY.md``, ``TEACHING.md``) are rewritten to the rendered
pages, resolved from the folder of the page that links them (from ``lessons/zh/``, ``TEACHING.md`` is the Chinese guide
and ``../TEACHING.md`` the English one).

    python scripts/make_book.py                  # writes build/book/
    python scripts/make_book.py --out /tmp/book  # anywhere else (the tests do this)

MathJax is copied into ``mathjax/`` from the ``jupyter-server-mathjax`` package, so the formulas render offline.

The API reference (``api/``) is generated from the docstrings by pdoc (markdown docstrings, ``$...$`` and ``$$...$$``
formulas, the book's own MathJax through ``scripts/pdoc_templates/math.html.jinja2``): one page per public module of
``tlkit``. Each "lesson NN" a docstring names links to that lesson's page; each lesson page links to the reference and,
for every object it shows with ``tl.show_source``, to that object's entry.
"""
from __future__ import annotations

import argparse
import html
import pkgutil
import posixpath
import re
import shutil
from pathlib import Path

import jinja2
import markdown2
import markupsafe
import nbformat
import pdoc
import pdoc.render
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
DEFAULT_OUT = ROOT / "build" / "book"
API_DIR = "api"
API_INDEX = f"{API_DIR}/tlkit.html"
PDOC_TEMPLATES = Path(__file__).resolve().parent / "pdoc_templates"
# Formulas in docstrings: $$display$$ first, then $inline$ (a code span is matched first so that it is left alone).
CODE_OR_MATH = re.compile(r"(`+)(?:.+?)\1|\$\$.+?\$\$|\$[^$\n]+?\$", flags=re.S)
LESSON_MENTION = re.compile(r"\b(lessons?)((?:(?:\s|,\s*|\s+and\s+|\s*[–-]\s*)\d\d\b)+)")
# Markdown pages of the book: source file name -> rendered page name.
MARKDOWN_PAGES = {"GLOSSARY.md": "glossary.html", "TEACHING.md": "teaching.html"}
ZH = "zh"  # the Chinese edition: lessons/zh/ → zh/ in the book
# Markdown pages that may have a Chinese edition in lessons/zh/ (rendered to zh/ under the same page name).
CHINESE_MARKDOWN_PAGES = {"TEACHING.md": "teaching.html"}

# MathJax 2.7 for every page. The book carries its own copy (from the jupyter-server-mathjax package, copied to
# mathjax/), so formulas render offline; without that package it falls back to the CDN nbconvert uses, and offline
# the formulas then show as their LaTeX source.
LOCAL_MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
CDN_MATHJAX_URL = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js?config=TeX-AMS_CHTML-full,Safe"
MATHJAX_CONFIG = """
<script type="text/x-mathjax-config">
MathJax.Hub.Config({tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], processEscapes: true}});
</script>
"""
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", "PingFang SC", sans-serif;
       max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.55; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #f3f3f3; }
code { background: #f5f5f5; padding: 0 0.2rem; }
pre { background: #f5f5f5; padding: 0.6rem; overflow-x: auto; }
nav { margin-bottom: 1.5rem; font-size: 0.95rem; }
ul.lessons { list-style: none; padding-left: 0; }
ul.lessons li { margin: 0.3rem 0; }
a.anchor-link { visibility: hidden; margin-left: 0.3rem; text-decoration: none; }
h1:hover a.anchor-link, h2:hover a.anchor-link, h3:hover a.anchor-link { visibility: visible; }
"""


def lesson_paths() -> list[Path]:
    """Every numbered lesson notebook, in course order."""
    return sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))


def chinese_lesson_paths() -> list[Path]:
    """The lessons' Chinese edition (``lessons/zh/``), in course order."""
    return sorted((LESSONS / ZH).glob("[0-9][0-9]_*.ipynb"))


def chinese_markdown_pages() -> dict[str, str]:
    """The markdown pages that have a Chinese edition in ``lessons/zh/``: source file name -> rendered page name."""
    return {source: page for source, page in CHINESE_MARKDOWN_PAGES.items() if (LESSONS / ZH / source).exists()}


def first_heading(markdown_text: str) -> str | None:
    """The text of the first markdown heading (``# 05 · 中文 / English`` → ``05 · 中文 / English``), if any."""
    match = re.search(r"^#+\s+(.*\S)", markdown_text, flags=re.M)
    return match.group(1) if match else None


def lesson_title(notebook: nbformat.NotebookNode, fallback: str) -> str:
    """The first heading of the notebook's markdown cells, or ``fallback``."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and (heading := first_heading(cell.source)):
            return heading
    return fallback


def page_name(target: str) -> str | None:
    """The rendered page a link inside the lessons points to, or ``None`` if it is not a book page."""
    name = Path(target).name
    if re.fullmatch(r"\d\d_[\w-]+\.ipynb", name):
        return Path(name).with_suffix(".html").name
    return MARKDOWN_PAGES.get(name)


def rewrite_links(page_html: str, root: str = "") -> str:
    """Point ``href`` links to lesson notebooks and the markdown pages at their rendered pages.

    ``root`` is the way from the page to the book's top folder (``"../"`` for the Chinese edition): a lesson links to
    its sibling in the same folder, the glossary and the teaching guide live at the top — except that a link that
    resolves into ``lessons/zh/`` (``TEACHING.md`` from a Chinese page, ``zh/TEACHING.md`` from an English one) reaches
    the Chinese edition of a markdown page where one exists. A relative link to anything else in the repository (a
    script, a file under ``tlkit/``) has no page in the book; it becomes plain text so that no link in the book is
    broken.
    """
    chinese_pages = set(chinese_markdown_pages().values())

    def replace(match: re.Match) -> str:
        target, anchor, text = match.group(1), match.group(2) or "", match.group(3)
        # URL, anchor, absolute path, API page or contents page (from zh/ too: ../api/, ../index.html): keep
        if re.match(rf"[a-z][a-z0-9+.-]*:|#|/|(?:\.\./)*(?:{API_DIR}/|index\.html)", target):
            return match.group(0)
        rendered = page_name(target)
        if rendered in MARKDOWN_PAGES.values():
            # Resolve the link from the page's folder in lessons/: into lessons/zh/ or up to lessons/.
            resolved = posixpath.normpath(posixpath.join(ZH if root else ".", target))
            in_chinese = resolved.split("/")[0] == ZH and rendered in chinese_pages
            if in_chinese:
                rendered = rendered if root else f"{ZH}/{rendered}"
            else:
                rendered = root + rendered
        return f'<a href="{rendered}{anchor}">{text}</a>' if rendered else text

    return re.sub(r'<a href="([^"#]*)(#[^"]*)?">(.*?)</a>', replace, page_html, flags=re.S)


def markdown_to_html(text: str) -> str:
    """Markdown → HTML with the ``markdown`` package if installed, else nbconvert's own filter (mistune)."""
    try:
        import markdown
    except ImportError:
        from nbconvert.filters import markdown2html

        return markdown2html(text)
    return markdown.markdown(text, extensions=["tables", "fenced_code"])


def install_mathjax(out: Path) -> str:
    """Copy MathJax into ``out/mathjax`` if the jupyter-server-mathjax package is installed; return the URL to load."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        return CDN_MATHJAX_URL
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", out / "mathjax", dirs_exist_ok=True)
    return LOCAL_MATHJAX_URL


def standalone_page(title: str, body: str, mathjax_url: str, back_link: bool = True, root: str = "",
                    switch: tuple[str, str] | None = None) -> str:
    """A page of the book around ``body``; ``root`` is the way to the book's top folder (``"../"`` in ``zh/``),
    ``switch`` the ``(link, label)`` of the same page in the other language, if it has one."""
    language = (f' · <a href="{switch[0]}" hreflang="{"en" if switch[1] == "English" else "zh"}">{switch[1]}</a>'
                if switch else "")
    nav = (f'<nav><a href="index.html">← 目录 / Contents</a> · <a href="{root}{API_INDEX}">API reference</a>'
           f'{language}</nav>\n' if back_link else "")
    return (
        "<!DOCTYPE html>\n<html lang=\"zh-Hans\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n{MATHJAX_CONFIG}"
        f"<script src=\"{html.escape(mathjax_url)}\"></script>\n</head>\n<body>\n{nav}{body}\n</body>\n</html>\n"
    )


def render_lessons(out: Path, mathjax_url: str, api_anchors: dict[str, str],
                   chinese: bool = False) -> list[tuple[str, str]]:
    """Write one HTML page per lesson of one edition (English at the top, Chinese in ``zh/``); return
    ``(page, title)`` in course order, pages relative to the book's top folder."""
    root = "../" if chinese else ""
    if not mathjax_url.startswith(("http:", "https:")):
        mathjax_url = root + mathjax_url
    exporter = HTMLExporter(template_name="lab", mathjax_url=mathjax_url)
    counterparts = ({path.name for path in lesson_paths()} if chinese
                    else {path.name for path in chinese_lesson_paths()})
    pages = []
    for path in chinese_lesson_paths() if chinese else lesson_paths():
        notebook = nbformat.read(path, as_version=4)
        title = lesson_title(notebook, path.stem)
        body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": title}})
        page = path.with_suffix(".html").name
        switch = None
        if path.name in counterparts:
            switch = (f"../{page}", "English") if chinese else (f"{ZH}/{page}", "中文")
        body = add_index_link(body, [(name, root + link) for name, link in shown_api_links(notebook, api_anchors)],
                              root=root, switch=switch)
        # The lab template loads require.js (and widget managers) from a CDN; the book stays offline without them.
        body = re.sub(r'<script[^>]*\ssrc="(?:https?:)?//[^"]*"[^>]*>\s*</script>', "", body)
        folder = out / ZH if chinese else out
        folder.mkdir(exist_ok=True)
        (folder / page).write_text(rewrite_links(body, root), encoding="utf-8")
        pages.append((f"{ZH}/{page}" if chinese else page, title))
    return pages


def shown_api_links(notebook: nbformat.NotebookNode, api_anchors: dict[str, str]) -> list[tuple[str, str]]:
    """``(name, API link)`` for every object the lesson shows with ``tl.show_source(...)`` that has an API entry."""
    links = {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for target in re.findall(r"show_source\(\s*([\w.]+)\s*\)", cell.source):
            name = re.sub(r"^(tl|tlkit)\.", "", target)
            if (link := api_link(name, api_anchors)) is not None:
                links[name] = link
    return list(links.items())


def api_link(name: str, api_anchors: dict[str, str]) -> str | None:
    """The API-reference link of ``name`` (``KMM.fit``, ``feature.CORAL.fit``, ``mmd2``), if it has an entry.

    A member without an entry of its own (``L2SP.__call__``) links to its class.
    """
    while name:
        if name in api_anchors:
            return api_anchors[name]
        matches = [link for qualified, link in api_anchors.items() if qualified.endswith("." + name)]
        if len(matches) == 1:
            return matches[0]
        name = name.rpartition(".")[0] if name.rpartition(".")[2].startswith("_") else ""
    return None


def add_index_link(page_html: str, api_links: list[tuple[str, str]] = (), root: str = "",
                   switch: tuple[str, str] | None = None) -> str:
    """Insert the navigation (index, API reference, the API entries the lesson shows, and the language switch to
    the other edition's page) after the ``<body ...>`` tag."""
    shown = "".join(f' · <a href="{link}"><code>{html.escape(name)}</code></a>' for name, link in api_links)
    language = f' · <a href="{switch[0]}" hreflang="{"en" if switch[1] == "English" else "zh"}">{switch[1]}</a>' \
        if switch else ""
    nav = (f'<nav style="padding: 0.5rem 1rem"><a href="index.html">← 目录 / Contents</a> · '
           f'<a href="{root}{API_INDEX}">API reference</a>{shown}{language}</nav>')
    return re.sub(r"(<body[^>]*>)", lambda match: match.group(1) + nav, page_html, count=1)


def render_markdown_pages(out: Path, mathjax_url: str, chinese: bool = False) -> list[tuple[str, str]]:
    """Write the glossary and the teaching guide (with ``chinese``: the Chinese editions in ``lessons/zh/`` to
    ``zh/``); return ``(page, title)`` for those that exist, pages relative to the book's top folder.

    A page with an edition in the other language carries the language switch to it (中文 / English).
    """
    root = "../" if chinese else ""
    if chinese and not mathjax_url.startswith(("http:", "https:")):
        mathjax_url = root + mathjax_url
    translated = chinese_markdown_pages()
    pages = []
    for source, page in (translated if chinese else MARKDOWN_PAGES).items():
        path = LESSONS / ZH / source if chinese else LESSONS / source
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        title = first_heading(text) or path.stem
        switch = None
        if chinese and (LESSONS / source).exists():
            switch = (f"../{page}", "English")
        elif not chinese and source in translated and chinese_lesson_paths():
            switch = (f"{ZH}/{page}", "中文")
        folder = out / ZH if chinese else out
        folder.mkdir(exist_ok=True)
        html_page = standalone_page(title, markdown_to_html(text), mathjax_url, root=root, switch=switch)
        (folder / page).write_text(rewrite_links(html_page, root), encoding="utf-8")
        pages.append((f"{ZH}/{page}" if chinese else page, title))
    return pages


def render_index(out: Path, lessons: list[tuple[str, str]], extras: list[tuple[str, str]], mathjax_url: str,
                 chinese_lessons: list[tuple[str, str]] = (), chinese_extras: list[tuple[str, str]] = ()) -> None:
    """The contents page of each edition: ``index.html`` (English) and, if any lesson has one, ``zh/index.html``.

    The Chinese contents page lists the Chinese edition of a reference page (the teaching guide) where there is one,
    else the shared page (the bilingual glossary)."""
    def items(pages, prefix=""):
        return "\n".join(f'<li><a href="{prefix}{page}">{html.escape(title)}</a></li>' for page, title in pages)

    switch = f'<p><a href="{ZH}/index.html" hreflang="zh">中文版</a></p>\n' if chinese_lessons else ""
    body = (
        "<h1>tlkit · 迁移学习课程 / A transfer-learning course</h1>\n"
        "<p>Every lesson as committed, with its outputs. To run them, open the notebooks in JupyterLab "
        f"(<code>make lab</code>).</p>\n{switch}"
        f"<h2>课程 / Lessons</h2>\n<ul class=\"lessons\">\n{items(lessons)}\n</ul>\n"
        f"<h2>参考 / Reference</h2>\n<ul>\n{items(extras)}\n"
        f'<li><a href="{API_INDEX}">API reference (tlkit)</a></li>\n</ul>\n'
    )
    (out / "index.html").write_text(standalone_page("tlkit course", body, mathjax_url, back_link=False),
                                    encoding="utf-8")
    if not chinese_lessons:
        return
    local = items([(page.removeprefix(ZH + "/"), title) for page, title in chinese_lessons])
    translated = {page.removeprefix(ZH + "/"): title for page, title in chinese_extras}
    references = "\n".join(
        f'<li><a href="{page}">{html.escape(translated[page])}</a></li>' if page in translated
        else f'<li><a href="../{page}">{html.escape(title)}</a></li>' for page, title in extras)
    body = (
        "<h1>tlkit · 迁移学习课程（中文版）</h1>\n"
        "<p>每一课都是提交时的版本，带有全部输出。要运行它们，请在 JupyterLab 中打开笔记本（<code>make lab</code>）。</p>\n"
        '<p><a href="../index.html" hreflang="en">English edition</a></p>\n'
        f"<h2>课程</h2>\n<ul class=\"lessons\">\n{local}\n</ul>\n"
        f"<h2>参考</h2>\n<ul>\n{references}\n"
        f'<li><a href="../{API_INDEX}">API 参考（tlkit）</a></li>\n</ul>\n'
    )
    url = mathjax_url if mathjax_url.startswith(("http:", "https:")) else "../" + mathjax_url
    (out / ZH / "index.html").write_text(standalone_page("tlkit 课程", body, url, back_link=False), encoding="utf-8")


def api_modules() -> list[str]:
    """``tlkit`` and every public module below it (no leading underscore), e.g. ``tlkit.kernels``, ``tlkit.training``."""
    import tlkit

    return ["tlkit"] + sorted(info.name for info in pkgutil.walk_packages(tlkit.__path__, "tlkit.")
                              if not any(part.startswith("_") for part in info.name.split("."))
                              and info.name.count(".") == 1)


def link_lessons(page_html: str, book_root: str) -> str:
    """Link each "lesson NN" / "lessons 04 and 09" in text (not inside tags, code or links) to the lesson pages."""
    pages = {path.name[:2]: path.with_suffix(".html").name for path in lesson_paths()}

    def replace(match: re.Match) -> str:
        numbers = re.sub(r"\d\d", lambda number: (f'<a href="{book_root}{pages[number.group(0)]}">{number.group(0)}</a>'
                                                  if number.group(0) in pages else number.group(0)), match.group(2))
        return match.group(1) + numbers

    pieces, inside = [], 0
    for piece in re.split(r"(<[^>]+>)", page_html):
        if piece.startswith("<"):
            tag = re.match(r"</?(\w+)", piece)
            if tag and tag.group(1) in ("a", "code", "pre"):
                inside += -1 if piece.startswith("</") else 1
            pieces.append(piece)
        else:
            pieces.append(piece if inside else LESSON_MENTION.sub(replace, piece))
    return "".join(pieces)


def to_html_keeping_math(markdown_text: str, original=pdoc.render.env.filters["to_html"]):
    """pdoc's markdown → HTML with every formula passed through untouched (markdown would eat ``\\{``, ``\\|``, ``_``)."""
    formulas = []

    def hide(match: re.Match) -> str:
        if match.group(0).startswith("`"):
            return match.group(0)
        formulas.append(match.group(0))
        return f"tlkitformula{len(formulas) - 1}x"

    rendered = original(CODE_OR_MATH.sub(hide, markdown_text))
    restore = lambda text: re.sub(r"tlkitformula(\d+)x", lambda m: html.escape(formulas[int(m.group(1))], quote=False), text)
    restored = markdown2.UnicodeWithAttrs(restore(str(rendered)))
    restored.toc_html = getattr(rendered, "toc_html", None)  # pdoc's module index reads it
    return restored


@jinja2.pass_context
def linkify_with_lessons(context, text: str, *args, original=pdoc.render.env.filters["linkify"], **kwargs) -> str:
    module = context.get("module")
    book_root = "../" * (module.modulename.count(".") + 1 if module else 1)
    return markupsafe.Markup(link_lessons(original(context, text, *args, **kwargs), book_root))


def render_api(out: Path) -> dict[str, str]:
    """Write the API reference to ``out/api`` with pdoc; return every public name → its link from the book root."""
    pdoc.render.configure(docformat="markdown", math=True, show_source=True, template_directory=PDOC_TEMPLATES,
                          footer_text="tlkit API reference")
    pdoc.render.env.filters["to_html"] = to_html_keeping_math
    pdoc.render.env.filters["linkify"] = linkify_with_lessons
    modules = api_modules()
    pdoc.pdoc(*modules, output_directory=out / API_DIR)
    anchors = {}
    for name in modules:
        module = pdoc.doc.Module.from_name(name)
        page = f"{API_DIR}/{name.replace('.', '/')}.html"
        prefix = name.removeprefix("tlkit").lstrip(".")
        for member in module.members.values():
            nested = member.own_members if isinstance(member, pdoc.doc.Class) else []
            for entry in [member, *nested]:
                if not entry.name.startswith("_"):  # pdoc shows no private or dunder member
                    anchors[f"{prefix}.{entry.qualname}".lstrip(".")] = f"{page}#{entry.qualname}"
    return anchors


def build(out: Path) -> list[str]:
    """Render the whole book into ``out``; return the names of the pages written (index first, API pages last)."""
    out.mkdir(parents=True, exist_ok=True)
    mathjax_url = install_mathjax(out)
    api_anchors = render_api(out)
    lessons = render_lessons(out, mathjax_url, api_anchors)
    chinese = render_lessons(out, mathjax_url, api_anchors, chinese=True)
    extras = render_markdown_pages(out, mathjax_url)
    # The Chinese teaching guide lives beside the Chinese lessons; without them there is no zh/ index to return to.
    chinese_extras = render_markdown_pages(out, mathjax_url, chinese=True) if chinese else []
    render_index(out, lessons, extras, mathjax_url, chinese, chinese_extras)
    api_pages = sorted(str(path.relative_to(out)) for path in (out / API_DIR).rglob("*.html"))
    chinese_pages = [f"{ZH}/index.html"] + [page for page, _ in chinese + chinese_extras] if chinese else []
    return ["index.html"] + [page for page, _ in lessons + extras] + api_pages + chinese_pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args()
    pages = build(args.out)
    print(f"wrote {len(pages)} pages to {args.out} — open {args.out / 'index.html'}")


if __name__ == "__main__":
    main()
