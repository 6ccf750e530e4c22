"""The wheel a user installs: built from a copy of the checkout, it holds the kernel sources and the shipped data;
installed into a new virtual environment and imported from a folder outside any checkout, it runs the fused C++
kernels and loads the shipped source checkpoint.

For speed the new environment sees the project environment's packages (a ``.pth`` line; ``--no-deps`` install)
and reuses the checkout's kernel build when one exists: the build cache is keyed on the sources' contents, flags,
torch and the CPU, not on where tlkit is installed, so the wheel's identical sources hit the same entry.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from tlkit.kernels import _build

ROOT = Path(__file__).resolve().parents[1]
SKIP_WHEN_COPYING = shutil.ignore_patterns(".git", ".venv", ".build", "build", "lessons", "*.egg-info", "__pycache__",
                                           ".pytest_cache", ".hypothesis", "*.so", "*.o")

USER_SCRIPT = """
import json, sys, torch
import tlkit as tl
from tlkit.feature import FeatureExtractor
x, y = torch.randn(200, 8, dtype=torch.float64), torch.randn(150, 8, dtype=torch.float64) + 0.5
value = tl.mmd2(x, y, sigma=2.0)
reference = tl.mmd2(x, y, sigma=2.0, backend="torch")
extractor = FeatureExtractor(weights="source")
features = extractor(torch.rand(4, 1, 8, 8))
print(json.dumps({"tlkit": tl.__file__, "backend": tl.kernels.choose_backend("auto", x.device)[0],
                  "close": bool(torch.allclose(value, reference, rtol=1e-9, atol=1e-12)),
                  "weights": extractor.weights_source, "features": list(features.shape)}))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A copy of the checkout without build products, environments or lessons."""
    copy = tmp_path_factory.mktemp("source") / "tlkit"
    shutil.copytree(ROOT, copy, ignore=SKIP_WHEN_COPYING)
    return copy


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--disable-pip-version-check", "-w", str(out), str(source)], check=True, timeout=600)
    (path,) = out.glob("tlkit-*.whl")
    return path


def test_wheel_holds_the_kernel_sources_and_the_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    print(f"\n{wheel.name}: {len(names)} files")
    print("\n".join(sorted(names)))
    for kind in ("cpp", "cuda"):
        for name in _build.SOURCES[kind] + _build.HEADERS[kind]:
            assert f"tlkit/kernels/csrc/{name}" in names, name
    shipped = {p.name for p in (ROOT / "tlkit" / "data" / "files").iterdir() if p.is_file()}
    assert shipped and {f"tlkit/data/files/{name}" for name in shipped} <= names
    assert "tlkit/kernels/README.md" in names
    assert not [n for n in names if n.endswith((".so", ".o", ".pyc"))]


def test_installed_wheel_runs_the_cpp_kernels_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "project-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, numpy, pip, ...
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed", "--quiet",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=300)
    checkout_build = Path(os.environ.get("TLKIT_BUILD_DIR", ROOT / ".build" / "ext"))
    reuse = (checkout_build / _build.library_path("cpp").relative_to(_build.build_root())).is_file()
    env = {key: value for key, value in os.environ.items() if key not in ("TLKIT_NO_BUILD", "PYTHONPATH")}
    env["TLKIT_BUILD_DIR"] = str(checkout_build if reuse else tmp_path / "cache")
    user_dir = tmp_path / "user-project"
    user_dir.mkdir()
    result = subprocess.run([str(python), "-c", USER_SCRIPT], capture_output=True, text=True, env=env, cwd=user_dir,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["tlkit"]).is_relative_to(venv) and not Path(report["tlkit"]).is_relative_to(ROOT)
    assert report["backend"] == "cpp", result.stderr[-2000:]
    assert report["close"]
    assert report["weights"] == "source-checkpoint" and report["features"][0] == 4
    assert ("building" in result.stderr) == (not reuse)  # the first-use line only when it really builds


def test_sdist_holds_the_tests_and_builds_a_complete_wheel(source, tmp_path):
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))"
    name = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, check=True,
                          timeout=300).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as sdist:
        names = sdist.getnames()
        sdist.extractall(tmp_path / "unpacked", filter="data")
    top = name.removesuffix(".tar.gz")
    assert f"{top}/tests/test_kernels.py" in names and f"{top}/tests/conftest.py" in names
    assert f"{top}/tlkit/kernels/csrc/ops.cpp" in names and f"{top}/tlkit/data/files/digits_source_cnn.pt" in names
    assert not [n for n in names if n.endswith((".so", ".o"))]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--disable-pip-version-check", "-w", str(tmp_path / "from-sdist"), str(tmp_path / "unpacked" / top)],
                   check=True, timeout=600)
    (built,) = (tmp_path / "from-sdist").glob("tlkit-*.whl")
    assert "tlkit/kernels/csrc/cuda/pairwise_kernels.cu" in zipfile.ZipFile(built).namelist()
