"""lessons/exercises/ is generated from the lessons: in sync, solutions stripped, outputs cleared; 3–5 exercises each."""
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_exercises", ROOT / "scripts" / "make_exercises.py")
make_exercises = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_exercises)

EXERCISE_HEADING = re.compile(r"^###\s*练习\s*(\d+)\s*/\s*Exercise\s*(\d+)", re.MULTILINE)
LESSONS = make_exercises.lesson_paths()
TAUGHT = [path for path in LESSONS if not path.name.startswith("00_")]


def test_committed_exercise_notebooks_are_up_to_date():
    assert make_exercises.out_of_date() == [], "run: python scripts/make_exercises.py"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_generator_removes_solutions_and_outputs_and_keeps_the_rest(path):
    lesson = nbformat.read(path, as_version=4)
    exercises = make_exercises.exercise_notebook(lesson)
    if exercises is None:
        assert not any(make_exercises.is_solution(cell) for cell in lesson.cells)
        return
    kept = [cell for cell in lesson.cells if not make_exercises.is_solution(cell)]
    assert [c.source for c in exercises.cells] == [c.source for c in kept]
    checks = [cell for cell in exercises.cells if make_exercises.is_check(cell)]
    assert all(make_exercises.KEEP_GOING_TAG in cell.metadata.tags for cell in checks)
    assert not any(make_exercises.is_solution(cell) for cell in exercises.cells)
    code = [cell for cell in exercises.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    nbformat.validate(exercises)


@pytest.mark.parametrize("path", TAUGHT, ids=lambda p: p.stem)
def test_each_lesson_has_three_to_five_exercises_each_with_a_solution(path):
    cells = nbformat.read(path, as_version=4).cells
    starts = [i for i, cell in enumerate(cells) if cell.cell_type == "markdown" and EXERCISE_HEADING.search(cell.source)]
    numbers = [int(EXERCISE_HEADING.search(cells[i].source).group(1)) for i in starts]
    assert 3 <= len(starts) <= 5, f"{path.name}: {len(starts)} exercises"
    assert numbers == list(range(1, len(starts) + 1)), f"{path.name}: exercises numbered {numbers}"
    for start, end in zip(starts, starts[1:] + [len(cells)]):
        block = cells[start + 1:end]
        learner = [c for c in block if c.cell_type == "code" and not make_exercises.is_solution(c)]
        solutions = [c for c in block if make_exercises.is_solution(c)]
        assert learner and solutions, f"{path.name}: exercise at cell {start} needs a learner cell and a solution cell"
        assert not any(make_exercises.is_check(c) and make_exercises.is_solution(c) for c in block), \
            f"{path.name}: a self-check cell tagged solution would vanish from the learner's copy"
        assert all(c.cell_type == "code" and c.source.strip() for c in solutions)


@pytest.mark.parametrize("path", TAUGHT, ids=lambda p: p.stem)
def test_the_learner_copy_keeps_self_checks(path):
    """Exercises whose answer can be checked keep an ``exercise-check`` cell the learner runs on their own answer."""
    exercises = make_exercises.exercise_notebook(nbformat.read(path, as_version=4))
    assert any(make_exercises.is_check(cell) for cell in exercises.cells), f"{path.name}: no self-check cell"
