"""Build and load the fused C++ (OpenMP) and CUDA extensions from ``csrc/`` with ``torch.utils.cpp_extension``.

Nothing here runs at import time. A build lands in a directory whose name hashes the sources, flags and torch
version, so an edited source or a new torch never loads a stale library. ``TLKIT_BUILD_DIR`` moves the build
root (default ``~/.cache/tlkit/ext``); ``TLKIT_NO_BUILD=1`` forbids compiling (prebuilt libraries still load).
"""
from __future__ import annotations

import glob
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parents[2] / "csrc"
SOURCES = {"cpp": ["tlkit_cpu.cpp"], "cuda": ["tlkit_cuda.cpp", "tlkit_cuda_kernels.cu", "tlkit_cuda.h"]}
# torch chooses the C++ standard (C++20 for torch >= 2.10); don't override it.
FLAGS = {
    "cpp": {"extra_cflags": ["-O3", "-fopenmp", "-march=native"], "extra_ldflags": ["-fopenmp"]},
    "cuda": {"extra_cflags": ["-O3"], "extra_cuda_cflags": ["-O3", "-lineinfo"]},
}
DEFAULT_CUDA_ARCHS = "8.0;9.0"
# A build takes well under this; a lock file older than it was left by a build that died.
STALE_LOCK_SECONDS = 600


@dataclass
class ExtensionState:
    """What happened when tlkit tried to make one extension available."""

    kind: str
    loaded: bool = False
    path: str | None = None
    reason: str = "not tried yet"
    build_seconds: float | None = None
    log: list[str] = field(default_factory=list)


_states: dict[str, ExtensionState] = {}


def build_root() -> Path:
    return Path(os.environ.get("TLKIT_BUILD_DIR") or Path.home() / ".cache" / "tlkit" / "ext")


def find_cuda_home() -> str | None:
    """The CUDA toolkit root: the folder holding ``include/cuda_runtime.h`` and ``bin/nvcc``.

    ``nvcc`` on PATH may be a wrapper script, so its parent folder is not trusted: candidates are checked
    for the header.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(os.path.realpath(nvcc)).parents[1]))
        try:  # a wrapper like `exec /usr/local/cuda-13.0/bin/nvcc "$@"`
            text = Path(nvcc).read_text(errors="ignore")[:4096]
            candidates += [str(Path(tok).parents[1]) for tok in text.split() if tok.endswith("/bin/nvcc")]
        except OSError:
            pass
    candidates += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        if root and (Path(root) / "include" / "cuda_runtime.h").is_file() and (Path(root) / "bin" / "nvcc").exists():
            return root
    return None


def source_paths(kind: str) -> list[Path]:
    return [CSRC / name for name in SOURCES[kind]]


def build_dir(kind: str) -> Path:
    digest = hashlib.sha256()
    for path in source_paths(kind):
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    digest.update(repr(FLAGS[kind]).encode())
    digest.update(os.environ.get("TORCH_CUDA_ARCH_LIST", "").encode() if kind == "cuda" else b"")
    tag = f"{kind}-torch{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}-{digest.hexdigest()[:12]}"
    return build_root() / tag


def library_path(kind: str) -> Path:
    return build_dir(kind) / f"tlkit_{kind}.so"


def _torch_lock_is_advisory() -> bool:
    """torch >= 2.10 holds an OS advisory lock (released if the builder dies); older torch blocks on the
    lock file's mere existence, so a build killed mid-way leaves a lock that would hang every later run."""
    from torch.utils import cpp_extension

    return hasattr(cpp_extension, "FileLock")


def _clear_stale_lock(directory: Path, advisory: bool | None = None) -> None:
    """With an existence-based lock, wait for a live build to finish, but remove a lock older than any build."""
    if _torch_lock_is_advisory() if advisory is None else advisory:
        return
    lock = directory / "lock"
    while lock.exists() and time.time() - lock.stat().st_mtime <= STALE_LOCK_SECONDS:
        time.sleep(1.0)
    lock.unlink(missing_ok=True)


def _missing_prerequisites(kind: str) -> str | None:
    missing = [p.name for p in source_paths(kind) if not p.is_file()]
    if missing:
        return f"sources {missing} not found in {CSRC} (tlkit runs from a source checkout to build kernels)"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ('{compiler}') on PATH; install g++ (e.g. apt-get install g++)"
    if shutil.which("ninja") is None and not (Path(sys.executable).parent / "ninja").exists():
        return "ninja is not installed; pip install ninja"
    if kind == "cuda":
        if torch.version.cuda is None:
            return "this torch is a CPU-only build (torch.version.cuda is None)"
        if find_cuda_home() is None:
            return "nvcc / the CUDA toolkit was not found; set CUDA_HOME to the folder holding include/cuda_runtime.h"
    return None


def build(kind: str, verbose: bool = False, directory: Path | None = None) -> Path:
    """Compile one extension (``kind`` = ``"cpp"`` or ``"cuda"``) and return the path of the shared library.

    Raises ``RuntimeError`` with the reason when it cannot be built. Loading it into the process is a
    side effect of ``torch.utils.cpp_extension.load``; the CUDA library needs the C++ one loaded first.
    """
    problem = _missing_prerequisites(kind)
    if problem:
        raise RuntimeError(problem)
    cuda_home = find_cuda_home()
    if cuda_home:  # torch reads it when cpp_extension is first imported
        os.environ["CUDA_HOME"] = cuda_home
    directory = directory or build_dir(kind)
    directory.mkdir(parents=True, exist_ok=True)
    _clear_stale_lock(directory)
    if kind == "cuda" and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    os.environ.setdefault("MAX_JOBS", str(max(1, os.cpu_count() or 1)))
    from torch.utils import cpp_extension

    if cuda_home:
        cpp_extension.CUDA_HOME = cuda_home  # in case torch was imported with another guess
    sources = [str(p) for p in source_paths(kind) if p.suffix != ".h"]
    cpp_extension.load(
        name=f"tlkit_{kind}", sources=sources, build_directory=str(directory),
        is_python_module=False, verbose=verbose, **FLAGS[kind],
    )
    return directory / f"tlkit_{kind}.so"


def state(kind: str) -> ExtensionState:
    return _states.setdefault(kind, ExtensionState(kind))


def load(kind: str, allow_build: bool | None = None, verbose: bool = False) -> ExtensionState:
    """Make the ``kind`` extension's ops available in ``torch.ops.tlkit``, building it if needed and allowed."""
    st = state(kind)
    if st.loaded or st.reason != "not tried yet":
        return st
    if kind == "cuda":
        if not torch.cuda.is_available():
            st.reason = "no CUDA device is visible to torch"
            return st
        cpu = load("cpp", allow_build, verbose)
        if not cpu.loaded:
            st.reason = f"needs the C++ extension first, which is unavailable: {cpu.reason}"
            return st
    if allow_build is None:
        allow_build = os.environ.get("TLKIT_NO_BUILD", "0") in ("", "0")
    path = library_path(kind) if all(p.is_file() for p in source_paths(kind)) else None
    try:
        if path is not None and path.is_file():
            torch.ops.load_library(str(path))
        elif not allow_build:
            st.reason = "not built and TLKIT_NO_BUILD is set; run `python -m tlkit build`"
            return st
        else:
            print(f"tlkit: building the fused {kind.upper()} kernels (one time, about a minute)...", file=sys.stderr)
            start = time.perf_counter()
            path = build(kind, verbose=verbose)
            st.build_seconds = time.perf_counter() - start
    except Exception as exc:  # a failed build must never break tlkit: the torch backend takes over
        st.reason = f"build or load failed: {_summarise(exc)}. Run `python -m tlkit build --verbose` for the log"
        return st
    from . import _registration

    _registration.register_python_parts()
    st.loaded, st.path, st.reason = True, str(path), "loaded"
    return st


def _summarise(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    errors = [line for line in text if "error" in line.lower()]
    return (errors[0] if errors else (text[-1] if text else type(exc).__name__))[:300]


def build_all(cuda: str = "auto", verbose: bool = False) -> bool:
    """``python -m tlkit build``: build the C++ extension and, where useful, the CUDA one. Returns success."""
    cpp = load("cpp", allow_build=True, verbose=verbose)
    print(f"tlkit C++ kernels: {cpp.reason}" + (f" ({cpp.path})" if cpp.loaded else ""))
    ok = cpp.loaded
    want_cuda = cuda == "yes" or (cuda == "auto" and torch.cuda.is_available())
    if want_cuda:
        try:
            start = time.perf_counter()
            path = library_path("cuda") if library_path("cuda").is_file() else build("cuda", verbose=verbose)
            print(f"tlkit CUDA kernels: built in {time.perf_counter() - start:.0f} s ({path})")
        except Exception as exc:
            print(f"tlkit CUDA kernels: failed: {_summarise(exc)}")
            ok = False
    return ok


def compiler_version() -> str | None:
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if not compiler:
        return None
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else compiler


def nvcc_version() -> str | None:
    home = find_cuda_home()
    if not home:
        return None
    out = subprocess.run([str(Path(home) / "bin" / "nvcc"), "--version"], capture_output=True, text=True, check=False)
    release = [line for line in out.stdout.splitlines() if "release" in line]
    return f"{release[0].strip() if release else 'nvcc'} at {home}"


def platform_summary() -> str:
    return f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
