"""What a lesson's text says is what its outputs show: every quoted measurement is printed by the lesson."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lesson_numbers", ROOT / "scripts" / "lesson_numbers.py")
lesson_numbers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lesson_numbers)

LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))


def test_the_checker_finds_a_number_no_output_shows(tmp_path):
    import nbformat
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print(0.853)", outputs=[nbformat.v4.new_output("stream", text="acc 0.853\n")]),
        nbformat.v4.new_markdown_cell("Accuracy rises to 0.85, about 85 % (formula 4.3, $x = 0.7$); later 0.91."),
    ])
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook, path)
    assert lesson_numbers.unsupported_numbers(path) == [(1, "0.91")]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_quoted_number_is_in_the_outputs(path):
    missing = lesson_numbers.unsupported_numbers(path)
    assert not missing, f"{path.name}: quoted in the text but not in any output or code literal: {missing}"
