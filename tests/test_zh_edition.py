"""The Chinese edition (lessons/zh/): the same code cells and outputs as the English lessons, every markdown cell a
translation of the English cell as it is now (scripts/zh_edition.py records a hash of it), and Chinese prose."""
import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("zh_edition", ROOT / "scripts" / "zh_edition.py")
zh_edition = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zh_edition)

CHINESE = zh_edition.chinese_lessons()


@pytest.mark.parametrize("chinese", CHINESE, ids=lambda p: p.stem)
def test_the_chinese_edition_is_in_step_with_the_english_one(chinese):
    """Same cells in the same order, identical code and outputs, no English cell changed after its translation."""
    english = ROOT / "lessons" / chinese.name
    assert english.exists(), f"lessons/zh/{chinese.name} has no English lesson"
    assert zh_edition.problems(english, chinese) == []


def test_every_lesson_and_the_teaching_guide_have_a_chinese_edition():
    english = {path.name for path in zh_edition.english_lessons()}
    assert english == {path.name for path in CHINESE}, sorted(english ^ {path.name for path in CHINESE})
    assert (ROOT / "lessons" / "zh" / "TEACHING.md").is_file()


@pytest.mark.parametrize("chinese", CHINESE, ids=lambda p: p.stem)
def test_the_chinese_edition_is_written_in_chinese(chinese):
    markdown = [cell.source for cell in nbformat.read(chinese, as_version=4).cells if cell.cell_type == "markdown"]
    count, share = zh_edition.cjk_share(markdown)
    assert share >= zh_edition.MIN_CJK_SHARE, f"{chinese.name}: CJK share {share:.0%} ({count} characters)"


def test_drift_is_reported(tmp_path, monkeypatch):
    """An English markdown cell edited after its translation, or a code output changed, is caught."""
    lessons = tmp_path / "lessons"
    (lessons / "zh").mkdir(parents=True)
    english = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 99 · Test\n\nAccuracy is 0.5."),
        nbformat.v4.new_code_cell("print(0.5)", outputs=[nbformat.v4.new_output("stream", text="0.5\n")]),
    ])
    nbformat.write(english, lessons / "99_test.ipynb")
    monkeypatch.setattr(zh_edition, "LESSONS", lessons)
    monkeypatch.setattr(zh_edition, "ZH", lessons / "zh")
    chinese = zh_edition.init("99")
    assert zh_edition.problems(lessons / "99_test.ipynb", chinese) == ["cell 0: not translated yet"]
    zh_edition.write_translations("99", {0: "# 99 · 测试\n\n准确率为 0.5。"})
    assert zh_edition.problems(lessons / "99_test.ipynb", chinese) == []
    english.cells[0].source += " More text."
    english.cells[1].outputs[0].text = "0.6\n"
    nbformat.write(english, lessons / "99_test.ipynb")
    assert zh_edition.problems(lessons / "99_test.ipynb", chinese) == [
        "cell 0: English text changed after its translation", "cell 1: code or outputs differ from English (run `sync`)"]
    assert zh_edition.sync(lessons / "99_test.ipynb", chinese)
    assert zh_edition.problems(lessons / "99_test.ipynb", chinese) == ["cell 0: English text changed after its translation"]


def test_cjk_share_ignores_formulas_and_code():
    assert zh_edition.cjk_share(["迁移学习 $\\mathrm{MMD}^2(P, Q)$ `tl.mmd2(x, y)`"]) == (4, 1.0)
    assert zh_edition.cjk_share(["迁移 transfer"]) == (2, 2 / 10)
