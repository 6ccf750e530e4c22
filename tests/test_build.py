"""The extension build: CUDA sources compile and link wherever nvcc exists; failures and stale locks never hang or break tlkit."""
import os
import subprocess
import sys
import time

import pytest
import torch

from tlkit.kernels import _build

CUDA_HOME = _build.find_cuda_home()


@pytest.mark.skipif(CUDA_HOME is None or torch.version.cuda is None, reason="needs nvcc and a CUDA build of torch")
def test_cuda_extension_compiles_links_and_registers(tmp_path):
    """Compile, link and load the CUDA library here (no GPU needed to register its kernels)."""
    code = f"""
import os, torch
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
from pathlib import Path
from tlkit.kernels import _build
assert _build.load("cpp").loaded, _build.state("cpp").reason
path = _build.build("cuda", directory=Path({str(tmp_path)!r}))
assert path.is_file(), path
for op in ("nearest", "kernel_matmul", "kernel_pair_grad", "mmd2_terms"):
    assert torch._C._dispatch_has_kernel_for_dispatch_key("tlkit::" + op, "CUDA"), op
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_cuda_home_is_the_toolkit_root():
    if CUDA_HOME is None:
        pytest.skip("no CUDA toolkit here")
    assert os.path.isfile(os.path.join(CUDA_HOME, "include", "cuda_runtime.h"))


def test_failed_build_falls_back_to_torch_with_one_warning(tmp_path):
    code = """
import warnings, torch
import tlkit as tl
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    x, y = torch.randn(50, 3), torch.randn(40, 3)
    a = tl.mmd2(x, y, 1.0); b = tl.mmd2(x, y, 1.0)
print(len([w for w in caught if "unavailable" in str(w.message)]), tl.kernels.choose_backend("auto", x.device)[0])
print(caught[0].message)
"""
    env = dict(os.environ, TLKIT_BUILD_DIR=str(tmp_path), TLKIT_NO_BUILD="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    count, backend, message = out.split(None, 2)
    assert count == "1" and backend == "torch"
    assert "TLKIT_NO_BUILD" in message and "python -m tlkit build" in message


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


def test_build_directory_changes_with_the_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_BUILD_DIR", str(tmp_path))
    source = tmp_path / "tlkit_cpu.cpp"
    source.write_text("// v1")
    monkeypatch.setattr(_build, "CSRC", tmp_path)
    first = _build.build_dir("cpp")
    source.write_text("// v2")
    assert _build.build_dir("cpp") != first and first.parent == tmp_path
