"""The Chinese edition (中文版) of the lessons: ``lessons/zh/NN_slug.ipynb`` beside ``lessons/NN_slug.ipynb``.

One code base, two texts. A Chinese lesson has the English lesson's cells in the same order: its code cells are
copies (source, outputs, tags), so it needs no execution of its own; its markdown cells are translations, each
recording in ``metadata.tlkit.translates`` a hash of the English cell it translates. An English cell edited after
its translation no longer matches that hash, so drift is reported instead of passing silently.

    python scripts/zh_edition.py init 05             # start lessons/zh/05_*.ipynb from the English lesson
    python scripts/zh_edition.py sync                # copy every English code cell and output into the zh edition
    python scripts/zh_edition.py check               # exit 1 on drift, stale or untranslated cells; print CJK share

A translator writes a cell with :func:`write_translations` (it records the English cell's current hash):

    from zh_edition import write_translations
    write_translations("05", {0: "# 05 · 基于样本的迁移 I ...", 4: "..."})
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
ZH = LESSONS / "zh"
KEY = "tlkit"
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN_OR_DIGIT = re.compile(r"[A-Za-z0-9]")
# What the CJK share does not count: formulas, code, link targets, HTML tags and bare URLs.
NOT_PROSE = re.compile(r"```.*?```|\$\$.*?\$\$|\$[^$\n]+?\$|`[^`\n]+`|\]\([^)]*\)|<[^>\n]+>|https?://\S+", flags=re.S)
MIN_CJK_SHARE = 0.60


def english_path(number: str) -> Path:
    matches = sorted(LESSONS.glob(f"{number}_*.ipynb"))
    if len(matches) != 1:
        raise SystemExit(f"no single English lesson {number}_*.ipynb in {LESSONS} (found {len(matches)})")
    return matches[0]


def chinese_path(english: Path) -> Path:
    return ZH / english.name


def english_lessons() -> list[Path]:
    return sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))


def chinese_lessons() -> list[Path]:
    return sorted(ZH.glob("[0-9][0-9]_*.ipynb"))


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def write(notebook: nbformat.NotebookNode, path: Path) -> None:
    nbformat.write(notebook, path)  # sources stored as line lists, as Jupyter does, so diffs stay per line


def cjk_share(markdown_cells: list[str]) -> tuple[int, float]:
    """(CJK characters, CJK / (CJK + Latin letters and digits)) of the prose, formulas and code excluded."""
    prose = NOT_PROSE.sub(" ", "\n".join(markdown_cells))
    cjk, other = len(CJK.findall(prose)), len(LATIN_OR_DIGIT.findall(prose))
    return cjk, cjk / max(cjk + other, 1)


def init(number: str) -> Path:
    """A Chinese edition that is still the English text: every markdown cell marked untranslated (no hash)."""
    english = english_path(number)
    target = chinese_path(english)
    if target.exists():
        raise SystemExit(f"{target.relative_to(ROOT)} exists already")
    notebook = read(english)
    notebook.metadata.setdefault(KEY, {})["language"] = "zh"
    ZH.mkdir(exist_ok=True)
    write(notebook, target)
    return target


def write_translations(number: str, translations: dict[int, str]) -> Path:
    """Set the Chinese text of markdown cells (by index) and record the hash of the English cell each translates."""
    english = read(english_path(number))
    target = chinese_path(english_path(number))
    chinese = read(target)
    for index, text in translations.items():
        if english.cells[index].cell_type != "markdown" or chinese.cells[index].cell_type != "markdown":
            raise ValueError(f"cell {index} of lesson {number} is not a markdown cell")
        chinese.cells[index].source = text
        chinese.cells[index].metadata.setdefault(KEY, {})["translates"] = source_hash(english.cells[index].source)
    write(chinese, target)
    return target


def sync(english: Path, chinese: Path) -> bool:
    """Copy the English code cells (source, outputs, metadata) into the Chinese edition; False if the cell
    structure differs (a cell added or removed in English: add or remove its counterpart, then sync again)."""
    en, zh = read(english), read(chinese)
    if [cell.cell_type for cell in en.cells] != [cell.cell_type for cell in zh.cells]:
        return False
    for index, cell in enumerate(en.cells):
        if cell.cell_type == "code":
            zh.cells[index] = copy.deepcopy(cell)
    zh.metadata.kernelspec = copy.deepcopy(en.metadata.get("kernelspec", {}))
    zh.metadata.language_info = copy.deepcopy(en.metadata.get("language_info", {}))
    write(zh, chinese)
    return True


def problems(english: Path, chinese: Path) -> list[str]:
    """Everything that makes the Chinese edition out of step with the English one, one line each."""
    en, zh = read(english), read(chinese)
    en_types, zh_types = [c.cell_type for c in en.cells], [c.cell_type for c in zh.cells]
    if en_types != zh_types:
        return [f"cell structure differs: English {len(en_types)} cells, Chinese {len(zh_types)} "
                "(run `init` again or mirror the added/removed cells)"]
    found = []
    for index, (en_cell, zh_cell) in enumerate(zip(en.cells, zh.cells)):
        if en_cell.cell_type == "code":
            if en_cell.source != zh_cell.source or en_cell.get("outputs") != zh_cell.get("outputs"):
                found.append(f"cell {index}: code or outputs differ from English (run `sync`)")
            continue
        recorded = zh_cell.metadata.get(KEY, {}).get("translates")
        if recorded is None:
            found.append(f"cell {index}: not translated yet")
        elif recorded != source_hash(en_cell.source):
            found.append(f"cell {index}: English text changed after its translation")
    return found


def report(paths: list[Path]) -> int:
    failures = 0
    for english in paths:
        chinese = chinese_path(english)
        if not chinese.exists():
            print(f"{english.stem}: no Chinese edition")
            failures += 1
            continue
        lines = problems(english, chinese)
        markdown = [cell.source for cell in read(chinese).cells if cell.cell_type == "markdown"]
        count, share = cjk_share(markdown)
        status = "ok" if not lines and share >= MIN_CJK_SHARE else "OUT OF STEP"
        print(f"{english.stem}: {status}, {count} CJK characters, CJK share {share:.0%}")
        for line in lines:
            print(f"  {line}")
        failures += status != "ok"
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init").add_argument("number")
    sub.add_parser("sync")
    check = sub.add_parser("check")
    check.add_argument("--all", action="store_true", help="also report English lessons with no Chinese edition")
    args = parser.parse_args()
    if args.command == "init":
        print(init(args.number).relative_to(ROOT))
    elif args.command == "sync":
        for chinese in chinese_lessons():
            english = LESSONS / chinese.name
            if not sync(english, chinese):
                print(f"{chinese.name}: cell structure differs from English; not synced")
    else:
        paths = english_lessons() if args.all else [LESSONS / path.name for path in chinese_lessons()]
        sys.exit(1 if report(paths) else 0)


if __name__ == "__main__":
    main()
