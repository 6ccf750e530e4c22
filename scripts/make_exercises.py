"""Write the learner's copy of every lesson: ``lessons/exercises/NN_slug.ipynb`` (and, for the Chinese edition,
``lessons/zh/exercises/NN_slug.ipynb`` from ``lessons/zh/NN_slug.ipynb``).

Each lesson ``lessons/NN_slug.ipynb`` that has cells tagged ``solution`` gets a copy without those cells, with every
output, execution count and run timestamp cleared, so learners attempt the exercises before reading the worked answers.
Cells tagged ``exercise-check`` (asserts on the learner's answer) stay in the copy and are tagged
``raises-exception`` there, so an unanswered exercise reports its failed check and Run All goes on to the next one.
Lessons without solution cells (lesson 00) get no copy.

    python scripts/make_exercises.py           # (re)write lessons/exercises/ and lessons/zh/exercises/
    python scripts/make_exercises.py --check   # exit 1 and list the files that are out of date
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
EXERCISES = LESSONS / "exercises"
# (lesson folder, exercise folder) of each edition: English, then Chinese.
EDITIONS = ((LESSONS, EXERCISES), (LESSONS / "zh", LESSONS / "zh" / "exercises"))
SOLUTION_TAG = "solution"
CHECK_TAG = "exercise-check"
KEEP_GOING_TAG = "raises-exception"


def lesson_paths() -> list[Path]:
    """Every numbered lesson notebook, in course order."""
    return sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))


def is_solution(cell) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def is_check(cell) -> bool:
    return CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def exercise_notebook(lesson: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """The lesson without its solution cells and with outputs cleared; ``None`` if it has no solution cells."""
    if not any(is_solution(cell) for cell in lesson.cells):
        return None
    notebook = copy.deepcopy(lesson)
    notebook.cells = [cell for cell in notebook.cells if not is_solution(cell)]
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # nbconvert's run timestamps: not part of the exercise
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        if is_check(cell) and KEEP_GOING_TAG not in cell.metadata.tags:
            cell.metadata.tags = [*cell.metadata.tags, KEEP_GOING_TAG]
    return notebook


def render(notebook: nbformat.NotebookNode) -> str:
    """The exact text written to disk (nbformat's canonical JSON, trailing newline)."""
    return nbformat.writes(notebook) + "\n"


def expected_files() -> dict[Path, str]:
    """Path → text of every exercise notebook the lessons imply."""
    files = {}
    for lessons, exercises in EDITIONS:
        for path in sorted(lessons.glob("[0-9][0-9]_*.ipynb")):
            notebook = exercise_notebook(nbformat.read(path, as_version=4))
            if notebook is not None:
                files[exercises / path.name] = render(notebook)
    return files


def committed_files() -> list[Path]:
    return [path for _, exercises in EDITIONS for path in sorted(exercises.glob("*.ipynb"))]


def out_of_date() -> list[str]:
    """Exercise files that are missing, differ from what the lessons imply, or belong to no lesson."""
    expected = expected_files()
    stale = [_name(path) for path, text in expected.items() if not path.is_file() or path.read_text() != text]
    orphans = [_name(path) for path in committed_files() if path not in expected]
    return sorted(stale + orphans)


def _name(path: Path) -> str:
    return str(path.relative_to(LESSONS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report files that are out of date (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = out_of_date()
        for name in stale:
            print(f"out of date: lessons/{name}")
        if stale:
            print("run: python scripts/make_exercises.py")
        return 1 if stale else 0
    expected = expected_files()
    for path, text in expected.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    for path in committed_files():
        if path not in expected:
            path.unlink()
            print(f"removed {path.relative_to(ROOT)} (no lesson with solutions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
