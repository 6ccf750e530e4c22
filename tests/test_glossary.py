"""lessons/GLOSSARY.md (术语表): one entry per term, each used by the lesson it names, and every term a lesson
introduces in both languages — ``中文 (English)`` — listed."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "lessons" / "GLOSSARY.md"
ROW = re.compile(r"^\|(?P<english>[^|]+)\|(?P<chinese>[^|]+)\|.*\|\s*(?P<lesson>\d\d)\s*\|\s*$", re.MULTILINE)
# A term introduced on first use: Chinese characters, then the English term in brackets, e.g. 负迁移 (negative transfer).
INTRODUCED = re.compile(r"([\u4e00-\u9fff][\u4e00-\u9fff·]*)\s*[(（]([A-Za-z][A-Za-z0-9 '\-]*?)\s*[,，;)）]")
ABOUT_THE_ARTICLE = "关于原文"  # those cells quote the article's section titles, e.g. §1 背景 (Background)


def names(cell: str) -> list[str]:
    """The ways a glossary cell writes its term: ``a / b`` are alternatives, ``x (y)`` gives x and y."""
    found = []
    for alternative in cell.split(" / "):
        outside = re.sub(r"\s*[(（][^)）]*[)）]", "", alternative).strip()
        inside = re.findall(r"[(（]([^)）]+)[)）]", alternative)
        found.extend(name for name in [outside, *inside] if name)
    return [name.lower() for name in found]


def entries() -> list[dict]:
    rows = [match.groupdict() for match in ROW.finditer(GLOSSARY.read_text(encoding="utf-8"))]
    return [{"english": names(row["english"].strip()), "chinese": names(row["chinese"].strip()), "lesson": row["lesson"],
             "term": row["english"].strip()} for row in rows]


def lesson_markdown(number: str) -> list[str]:
    [path] = (ROOT / "lessons").glob(f"{number}_*.ipynb")
    return [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"]


LESSON_NUMBERS = sorted(path.name[:2] for path in (ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))


def test_the_glossary_has_entries_for_every_lesson():
    assert {entry["lesson"] for entry in entries()} == set(LESSON_NUMBERS)


def test_no_term_is_listed_twice():
    seen = {}
    for entry in entries():
        for name in set(entry["english"] + entry["chinese"]):  # a name may be the same in both languages (BERT)
            assert name not in seen, f"{name!r} is listed for lesson {seen[name]} and again for lesson {entry['lesson']}"
            seen[name] = entry["lesson"]


@pytest.mark.parametrize("number", LESSON_NUMBERS)
def test_each_term_is_used_in_the_lesson_it_names(number):
    text = "\n".join(lesson_markdown(number)).lower()
    unused = [entry["term"] for entry in entries() if entry["lesson"] == number
              and not any(name in text for name in entry["english"] + entry["chinese"])]
    assert not unused, f"GLOSSARY.md names lesson {number} for terms its text never uses: {unused}"


@pytest.mark.parametrize("number", LESSON_NUMBERS)
def test_every_term_a_lesson_introduces_is_in_the_glossary(number):
    known = [name for entry in entries() for name in entry["english"] + entry["chinese"]]
    missing = []
    for source in lesson_markdown(number):
        if ABOUT_THE_ARTICLE in source:
            continue
        for chinese, english in INTRODUCED.findall(source):
            if not any(name in chinese or name in english.lower() or english.lower() in name for name in known):
                missing.append(f"{chinese} ({english})")
    assert not missing, f"lesson {number} introduces terms that lessons/GLOSSARY.md lacks: {sorted(set(missing))}"


def test_names_reads_alternatives_and_brackets():
    assert names("density ratio / importance weight") == ["density ratio", "importance weight"]
    assert names("maximum mean discrepancy (MMD)") == ["maximum mean discrepancy", "mmd"]
    assert names("L2-SP 正则 (以起点为参照)") == ["l2-sp 正则", "以起点为参照"]


CHINESE_EDITIONS = sorted(path.name[:2] for path in (ROOT / "lessons" / "zh").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("number", CHINESE_EDITIONS)
def test_each_term_is_used_in_chinese_in_the_chinese_edition_of_its_lesson(number):
    [path] = (ROOT / "lessons" / "zh").glob(f"{number}_*.ipynb")
    text = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown")
    unused = [entry["term"] for entry in entries() if entry["lesson"] == number
              and not any(name in text.lower() for name in entry["chinese"])]
    assert not unused, f"the Chinese edition of lesson {number} never uses the Chinese term of: {unused}"
