"""What a lesson's text says is what its outputs show: every quoted measurement is printed by the lesson."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lesson_numbers", ROOT / "scripts" / "lesson_numbers.py")
lesson_numbers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lesson_numbers)

# Both editions: the Chinese one (lessons/zh/) quotes the same outputs in its own words.
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb")) + sorted((ROOT / "lessons").glob("zh/[0-9][0-9]_*.ipynb"))


def test_the_checker_finds_a_number_no_output_shows(tmp_path):
    import nbformat
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print(0.853)", outputs=[nbformat.v4.new_output("stream", text="acc 0.853\n")]),
        nbformat.v4.new_markdown_cell("Accuracy rises to 0.85, about 85 % (formula 4.3, $x = 0.7$); later 0.91."),
    ])
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook, path)
    assert lesson_numbers.unsupported_numbers(path) == [(1, "0.91")]


def lesson_id(path):
    return f"zh-{path.stem}" if path.parent.name == "zh" else path.stem


@pytest.mark.parametrize("path", LESSONS, ids=lesson_id)
def test_every_quoted_number_is_in_the_outputs(path):
    missing = lesson_numbers.unsupported_numbers(path)
    assert not missing, f"{path.name}: quoted in the text but not in any output or code literal: {missing}"


SHOW_SOURCE = re.compile(r"^\s*tl\.show_source\((?P<target>[\w.]+)\)\s*$")


def _shown_sources(path):
    """(cell index, target expression, committed text) of every ``tl.show_source(...)`` cell of a lesson."""
    import nbformat
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        match = SHOW_SOURCE.match(cell.source) if cell.cell_type == "code" else None
        if match:
            shown = "".join(output.get("data", {}).get("text/plain", "") for output in cell.outputs)
            yield index, match["target"], shown


@pytest.mark.parametrize("path", LESSONS, ids=lesson_id)
def test_shown_source_is_the_library_as_it_is(path):
    """A lesson that shows a function's code shows today's code: re-run the lesson after changing the function."""
    import inspect

    import tlkit as tl
    namespace = {"tl": tl, **{name: getattr(tl, name) for name in dir(tl)}}
    for subpackage in ("instance", "feature", "parameter", "relational", "meta", "metrics", "kernels", "text",
                       "selection"):
        namespace.update(vars(getattr(tl, subpackage)))
    import tlkit.distributed as td  # lesson 17's alias
    namespace["td"] = td
    for index, target, shown in _shown_sources(path):
        source = inspect.getsource(eval(target, namespace))  # noqa: S307 - a dotted name from our own notebook
        assert shown.strip() == source.strip(), f"{path.name}: cell {index} shows an old version of {target}"
