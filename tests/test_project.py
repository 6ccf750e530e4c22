"""The kit's promises about itself: README in sync with lessons/, fast import, no compile at import, CLI."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tlkit as tl

ROOT = Path(__file__).resolve().parents[1]


def test_readme_lists_exactly_the_lessons():
    listed = set(re.findall(r"lessons/(\d\d_[a-z0-9_]+)\.ipynb", (ROOT / "README.md").read_text()))
    present = {p.stem for p in (ROOT / "lessons").glob("[0-9][0-9]_*.ipynb")}
    assert listed == present


def test_readme_gives_the_two_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_lessons_are_committed_executed_without_errors():
    for path in sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
        assert all(c["execution_count"] is not None for c in cells), f"{path.name} has unexecuted cells"
        assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"], f"{path.name} stores an error"
        assert "tl.setup(seed=0)" in "".join(cells[0]["source"]), f"{path.name}: first code cell must call tl.setup(seed=0)"


def test_import_compiles_nothing_and_loads_no_extension():
    code = ("import sys, time; t = time.perf_counter(); import tlkit; dt = time.perf_counter() - t; "
            "print(dt, 'torch.utils.cpp_extension' in sys.modules, 'tlkit.kernels._library' in sys.modules)")
    seconds, compiled, loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                               check=True).stdout.split()
    assert compiled == "False" and loaded == "False"
    print(f"import tlkit took {float(seconds):.2f} s")


def test_setup_seeds_and_prints_one_line(capsys):
    import numpy as np
    import torch

    tl.setup(seed=3)
    first = (torch.rand(3), np.random.rand(3))
    tl.setup(seed=3)
    assert torch.equal(first[0], torch.rand(3)) and np.array_equal(first[1], np.random.rand(3))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and f"tlkit {tl.__version__}" in lines[0] and "kernels:" in lines[0]
    assert tl.get_device().type in ("cpu", "cuda") and torch.are_deterministic_algorithms_enabled()


def test_doctor_cli_reports_backends_and_offline_assets():
    out = subprocess.run([sys.executable, "-m", "tlkit", "doctor"], capture_output=True, text=True, check=True).stdout
    for key in ("torch", "C++ compiler", "nvcc", "kernels: cpp", "kernels: cuda", "auto backend on cpu",
                "gensim test data", "MiniLM"):
        assert key in out, key


def test_show_source_prints_the_code(capsys):
    tl.show_source(tl.median_bandwidth)
    assert "def median_bandwidth" in capsys.readouterr().out


def test_setup_adds_an_installed_chinese_font_as_a_fallback(monkeypatch):
    import matplotlib as mpl
    from matplotlib import font_manager

    from tlkit import _env

    monkeypatch.setitem(mpl.rcParams, "font.family", ["sans-serif"])
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [font_manager.FontEntry(name="DejaVu Sans")])
    assert _env.cjk_font() is None
    tl.setup(seed=0, quiet=True)
    assert mpl.rcParams["font.family"] == ["sans-serif"]  # no Chinese font: nothing changes
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [font_manager.FontEntry(name="WenQuanYi Micro Hei"),
                                                              font_manager.FontEntry(name="Noto Sans CJK SC")])
    assert _env.cjk_font() == "Noto Sans CJK SC"  # the preferred one of those installed
    tl.setup(seed=0, quiet=True)
    tl.setup(seed=0, quiet=True)  # a second call does not add it twice
    assert mpl.rcParams["font.family"] == ["sans-serif", "Noto Sans CJK SC"]


def test_chinese_text_renders_where_a_chinese_font_is_installed():
    import warnings

    import matplotlib
    from matplotlib.figure import Figure

    from tlkit import _env

    if _env.cjk_font() is None:
        pytest.skip("no Chinese font installed (e.g. apt install fonts-wqy-microhei)")
    with matplotlib.rc_context():
        tl.setup(seed=0, quiet=True)
        figure = Figure()
        figure.add_subplot().set_title("目标域准确率 / target accuracy")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" otherwise
            figure.canvas.draw()
