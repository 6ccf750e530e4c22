"""The kernel build: CUDA sources compile and link wherever nvcc exists; the build cache is per user and keyed on
sources, flags, torch and the CPU; failures, unwritable caches and stale locks never hang or break tlkit and say
what to do."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tlkit.kernels import _build

CUDA_HOME = _build.find_cuda_home()
ROOT = Path(__file__).resolve().parents[1]


def run_python(code, tmp_path, **env):
    """Run ``code`` in a fresh interpreter from ``tmp_path`` (outside the checkout's directory)."""
    full_env = {key: value for key, value in os.environ.items() if key != "TLKIT_NO_BUILD"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=tmp_path,
                          timeout=900)


@pytest.mark.skipif(CUDA_HOME is None or torch.version.cuda is None, reason="needs nvcc and a CUDA build of torch")
def test_cuda_extension_compiles_links_and_registers(tmp_path):
    """Compile, link and load the CUDA library here (no GPU needed to register its kernels)."""
    code = f"""
import os, torch
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
from pathlib import Path
from tlkit.kernels import _build, _library
assert _library.CPP.loaded, _library.CPP.reason
path, seconds = _build.compile_library("cuda", directory=Path({str(tmp_path)!r}))
assert path.is_file(), path
for op in ("nearest", "kernel_matmul", "kernel_matmul_multi", "kernel_pair_grad", "mmd2_terms"):
    assert torch._C._dispatch_has_kernel_for_dispatch_key("tlkit::" + op, "CUDA"), op
print("ok")
"""
    result = run_python(code, tmp_path)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_cuda_home_is_the_toolkit_root():
    if CUDA_HOME is None:
        pytest.skip("no CUDA toolkit here")
    assert os.path.isfile(os.path.join(CUDA_HOME, "include", "cuda_runtime.h"))


FALLBACK = """
import warnings, torch
import tlkit as tl
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    x, y = torch.randn(50, 3), torch.randn(40, 3)
    a = tl.mmd2(x, y, 1.0)  # the user's line
    b = tl.mmd2(x, y, 1.0)
found = [w for w in caught if "unavailable" in str(w.message)]
print(len(found), tl.kernels.choose_backend("auto", x.device)[0], found[0].filename, found[0].lineno)
print(found[0].message)
"""


def test_failed_build_falls_back_to_torch_with_one_warning_at_the_users_call(tmp_path):
    result = run_python(FALLBACK, tmp_path, TLKIT_BUILD_DIR=str(tmp_path), TLKIT_NO_BUILD="1")
    count, backend, filename, lineno, message = result.stdout.split(None, 4)
    assert count == "1" and backend == "torch"
    assert (filename, lineno) == ("<string>", "7")  # the tl.mmd2 line, not sys:1 or a tlkit frame
    assert "TLKIT_NO_BUILD" in message and "python -m tlkit build" in message
    assert "building" not in result.stderr


def test_unwritable_cache_suggests_tlkit_build_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_python(FALLBACK, tmp_path, TLKIT_BUILD_DIR=str(blocker / "cache"))
    message = result.stdout.split(None, 4)[-1]
    assert "not writable" in message and "set TLKIT_BUILD_DIR" in message, result.stdout + result.stderr
    assert "building" not in result.stderr  # nothing was built, so the first-use line does not claim it


def test_build_command_reports_the_reason_and_fails(tmp_path):
    env = dict(os.environ, TLKIT_BUILD_DIR=str(tmp_path), CXX="no-such-compiler")
    result = subprocess.run([sys.executable, "-m", "tlkit", "build"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    assert "tlkit build failed: no C++ compiler ('no-such-compiler') on PATH" in result.stderr
    assert "building" not in result.stderr


def test_stale_lock_never_hangs(tmp_path):
    """An existence-based lock (older torch) left by a killed build is removed once older than any build;
    torch's advisory lock file is left alone (the OS releases it when its holder dies)."""
    lock = tmp_path / "lock"
    old = time.time() - _build.STALE_LOCK_SECONDS - 60
    lock.touch()
    os.utime(lock, (old, old))
    _build._clear_stale_lock(tmp_path, advisory=True)
    assert lock.exists()
    start = time.perf_counter()
    _build._clear_stale_lock(tmp_path, advisory=False)
    assert not lock.exists() and time.perf_counter() - start < 5


def test_cache_key_covers_sources_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(_build, "CSRC", tmp_path)
    source = tmp_path / "ops.cpp"
    source.write_text("// v1")
    first = _build.build_dir("cpp")
    assert first.parent == tmp_path
    source.write_text("// v2")
    second = _build.build_dir("cpp")
    assert second != first
    monkeypatch.setattr(_build, "cpu_fingerprint", lambda: "another CPU with other instruction-set flags")
    assert _build.build_dir("cpp") != second  # -march=native code must never load on another CPU


def test_cache_is_per_user_and_never_in_the_package(monkeypatch):
    monkeypatch.delenv("TLKIT_BUILD_DIR", raising=False)
    root = _build.build_root()
    assert root.is_relative_to(Path.home()) and "tlkit" in root.parts
    assert not root.is_relative_to(Path(_build.__file__).resolve().parents[1])
    assert _build.cpu_fingerprint()


def test_doctor_shows_no_absolute_paths_of_this_machine(capsys):
    import tlkit as tl

    report = tl.doctor()
    printed = capsys.readouterr().out
    for absolute in {str(ROOT), str(Path.home()), sys.prefix, str(Path(sys.prefix).resolve())}:
        assert absolute not in printed, absolute
    assert report["build directory"] == _build.display_path(_build.build_root())
    assert _build.display_path(Path.home() / "x") == str(Path("~", "x"))
    assert _build.display_path(ROOT / "tlkit") == "tlkit"


def test_compiling_leaves_the_cache_key_unchanged(tmp_path, monkeypatch):
    """torch's loader appends to the flag lists it is given; the key computed after a build must still be the one
    the build used, or the next lookup would compile again."""
    from torch.utils import cpp_extension

    def fake_load(name, sources, build_directory, extra_cflags=(), **kwargs):
        extra_cflags.append("-DADDED_BY_TORCH")
        (Path(build_directory) / f"{name}.so").write_bytes(b"")

    monkeypatch.setenv("TLKIT_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    before = _build.build_dir("cpp")
    path, _ = _build.compile_library("cpp")
    assert path.parent == before == _build.build_dir("cpp")
