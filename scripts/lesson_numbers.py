"""Find numbers that a lesson's text quotes but its outputs do not show.

A lesson may only quote what it measured: every decimal number (``0.853``, ``12.4 %``) and every integer
percentage or ratio (``35 %``, ``3×``) in a markdown cell must appear in the outputs of the same notebook — or as
a literal in its code, for the settings a lesson chose (``σ = 0.5``). Sizes such as ``64 × 64`` are not ratios. A quoted number matches an output value
when the value, rounded to the quoted number of decimals, equals it; a percentage also matches a fraction
(``39 %`` ↔ ``0.392``). Formulas (``$…$``), code spans, links, and references to sections, formulas, tables and
versions (``§5.1``, ``formula 4.3``, ``Python 3.11``, and the article's section numbers in a cell about the article) are not quotes of a measurement. The references section at
the end of a lesson is skipped.

    python scripts/lesson_numbers.py                  # every lesson, both editions; exit 1 if any is unsupported
    python scripts/lesson_numbers.py lessons/04_measuring_shift.ipynb
"""
from __future__ import annotations

import re
import sys
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"

_NUMBER = r"\d+(?:\.\d+)?"
QUOTED = re.compile(rf"(?<![A-Za-z0-9_.,/×-])({_NUMBER})(?:\s*(%|％|(?:×|x\b)(?!\s*\d)|倍|个百分点|percentage points|points))?(?![\w.]*\d)")
OUTPUT_NUMBER = re.compile(r"(?<![\w.])-?(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
NOT_A_MEASUREMENT = re.compile(
    r"(§|formula[s]?|eq\.?|equation|section|sections|table|figure|fig\.|lesson[s]?|cell[s]?|step|chapter|"
    r"python|torch|version|v|公式|式|第|节|表|图|课|步)\s*$", re.IGNORECASE)
ARTICLE_SECTION = re.compile(r"^[1-5]\.[1-4]$")  # the article's sections 1–5.4, in cells that talk about the article
MENTIONS_ARTICLE = re.compile(r"article|原文|§")
REFERENCES_HEADING = re.compile(r"^#+\s*.*(参考文献|References)", re.MULTILINE)
STRIP = [re.compile(p, re.DOTALL) for p in (
    r"```.*?```", r"\$\$.*?\$\$", r"\$[^$\n]+\$", r"`[^`\n]+`", r"\]\([^)]*\)", r"<[^>]+>", r"https?://\S+",
    r"\b\d+(?:\.\d+){2,}\b",  # versions like 2.14.1
    r"\b\d+\.\d+\s*[-–]\s*\d+\.\d+\.\d+",  # section ranges like 3.1–3.4.2
)]


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _rounds_to(value: Decimal, quoted: Decimal, places: int) -> bool:
    step = Decimal(1).scaleb(-places)
    return any(value.quantize(step, rounding=mode) == quoted for mode in (ROUND_HALF_UP, ROUND_HALF_EVEN))


def quoted_numbers(markdown: str) -> list[tuple[str, str]]:
    """(number, unit) pairs that read as quoted measurements in one markdown cell."""
    heading = REFERENCES_HEADING.search(markdown)
    if heading:
        markdown = markdown[:heading.start()]
    for pattern in STRIP:
        markdown = pattern.sub(" ", markdown)
    about_article = bool(MENTIONS_ARTICLE.search(markdown))
    found = []
    for match in QUOTED.finditer(markdown):
        number, unit = match.group(1), match.group(2) or ""
        if "." not in number and not unit:
            continue  # integers are counts and settings (20 epochs, k = 5); decimals and percentages are results
        if about_article and not unit and ARTICLE_SECTION.match(number):
            continue
        if NOT_A_MEASUREMENT.search(markdown[max(0, match.start() - 14):match.start()]):
            continue
        found.append((number, unit))
    return found


def _output_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts.extend(data.get(kind, "") for kind in ("text/plain", "text/markdown", "text/html", "text/latex"))
    return "".join("".join(part) if isinstance(part, list) else part for part in parts)


def supported_values(notebook) -> list[Decimal]:
    """Every number printed in the notebook's outputs or written as a literal in its code."""
    values = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for text in (_output_text(cell), cell.source):
            values.extend(Decimal(m) for m in OUTPUT_NUMBER.findall(text) if len(m) < 40)
    return values


def unsupported_numbers(path: Path) -> list[tuple[int, str]]:
    """(cell index, quoted text) for each quoted number that no output or code literal supports."""
    notebook = nbformat.read(path, as_version=4)
    values = supported_values(notebook)
    missing = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "markdown":
            continue
        for number, unit in quoted_numbers(cell.source):
            quoted = Decimal(number)
            places = _decimals(number)
            candidates = values
            if unit in ("%", "％", "个百分点", "percentage points", "points"):
                candidates = values + [v * 100 for v in values]
            if not any(_rounds_to(v, quoted, places) for v in candidates):
                missing.append((index, f"{number}{(' ' + unit) if unit else ''}"))
        if REFERENCES_HEADING.search(cell.source):
            break  # the references section closes the lesson
    return missing


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted(LESSONS.glob("[0-9][0-9]_*.ipynb")) + sorted(LESSONS.glob("zh/[0-9][0-9]_*.ipynb"))
    bad = 0
    for path in paths:
        for index, text in unsupported_numbers(path):
            print(f"{path.name}: cell {index}: {text!r} is quoted but no output shows it")
            bad += 1
    print(f"{bad} unsupported number(s) in {len(paths)} lesson(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
