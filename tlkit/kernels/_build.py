"""The builder: compiles the fused C++ (OpenMP) and CUDA libraries from ``csrc/`` with ``torch.utils.cpp_extension``
and reports the toolchain. It registers nothing (``_library`` loads the libraries and registers the Python parts).

Nothing here runs at import time. A build lands in ``<build root>/<kind>-torch<version>-py<version>-<hash>``, the
hash covering the sources, the flags, ``TORCH_CUDA_ARCH_LIST`` and, for the ``-march=native`` C++ build, the CPU
(model and instruction-set flags): an edited source, a new torch or another CPU sharing the home directory never
loads a stale or incompatible library. The build root is ``$TLKIT_BUILD_DIR``, else the per-user cache directory
(``~/.cache/tlkit`` on Linux, from ``platformdirs``), never site-packages. ``TLKIT_NO_BUILD=1`` forbids compiling
(built libraries still load).
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
from pathlib import Path

import platformdirs
import torch

CSRC = Path(__file__).resolve().parent / "csrc"


def _relative(pattern: str) -> list[str]:
    return sorted(str(path.relative_to(CSRC)) for path in CSRC.glob(pattern))


# Every source in csrc/ (C++) and csrc/cuda/ (CUDA) is compiled, so a new op file needs no edit here; the headers
# are hashed into the cache key too.
SOURCES = {"cpp": _relative("*.cpp"), "cuda": _relative("cuda/*.cpp") + _relative("cuda/*.cu")}
HEADERS = {"cpp": _relative("*.h"), "cuda": _relative("*.h") + _relative("cuda/*.h")}
LABELS = {"cpp": "C++", "cuda": "CUDA"}
# torch chooses the C++ standard (C++20 for torch >= 2.10); don't override it.
# On AVX-512 CPUs GCC's -march=native prefers 256-bit vectors; the fused loops run 1.2-1.6x faster with 512-bit
# ones (bench_kernels.py --only-new).  The option is x86's only; elsewhere the native width is used.
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
FLAGS = {
    "cpp": {"extra_cflags": ["-O3", "-fopenmp", "-march=native"] + (["-mprefer-vector-width=512"] if X86 else []),
            "extra_ldflags": ["-fopenmp"]},
    "cuda": {"extra_cflags": ["-O3"], "extra_cuda_cflags": ["-O3", "-lineinfo"]},
}
DEFAULT_CUDA_ARCHS = "8.0;9.0"
# A build takes well under this; a lock file older than it was left by a build that died.
STALE_LOCK_SECONDS = 600


class BuildError(RuntimeError):
    """A library cannot be built here; the message says why and what to do."""


def build_root() -> Path:
    """``$TLKIT_BUILD_DIR``, else the per-user cache directory (``~/.cache/tlkit`` on Linux)."""
    return Path(os.environ.get("TLKIT_BUILD_DIR") or platformdirs.user_cache_dir("tlkit", appauthor=False))


def cpu_fingerprint() -> str:
    """What ``-march=native`` compiles for: the CPU model and instruction-set flags (``/proc/cpuinfo``), else the
    processor name ``platform`` reports."""
    wanted = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in wanted:
                fields.setdefault(key.strip(), " ".join(sorted(value.split())))
    except OSError:
        pass
    return repr(sorted(fields.items())) if fields else f"{platform.machine()} {platform.processor()}"


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
    return [CSRC / name for name in SOURCES[kind] + HEADERS[kind]]


def build_dir(kind: str) -> Path:
    digest = hashlib.sha256()
    for path in source_paths(kind):
        digest.update(str(path.relative_to(CSRC)).encode())
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    digest.update(repr(FLAGS[kind]).encode())
    digest.update(os.environ.get("TORCH_CUDA_ARCH_LIST", "").encode() if kind == "cuda" else cpu_fingerprint().encode())
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


def missing_prerequisite(kind: str) -> str | None:
    """Why ``kind`` cannot be compiled here, or None."""
    if not SOURCES[kind]:
        return f"the {LABELS[kind]} kernel sources are missing from {display_path(CSRC)} (reinstall tlkit)"
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


def _writable(directory: Path) -> str | None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        return (f"the build directory {display_path(directory)} is not writable ({exc.strerror or exc}); "
                "set TLKIT_BUILD_DIR to a writable folder")
    return None


def compile_library(kind: str, verbose: bool = False, directory: Path | None = None) -> tuple[Path, float]:
    """Compile one library (``kind`` = ``"cpp"`` or ``"cuda"``): (path of the shared library, seconds it took).

    Prints one line to stderr — where it builds, then how long it took. Raises ``BuildError`` with the reason
    when it cannot start a build, ``RuntimeError`` when the compiler fails. ``torch.utils.cpp_extension.load`` also maps the library into this process; the CUDA
    library needs the C++ one (which declares the ops) loaded first.
    """
    directory = directory or build_dir(kind)
    problem = missing_prerequisite(kind) or _writable(directory)
    if problem:
        raise BuildError(problem)
    cuda_home = find_cuda_home()
    if cuda_home:  # torch reads it when cpp_extension is first imported
        os.environ["CUDA_HOME"] = cuda_home
    _clear_stale_lock(directory)
    if kind == "cuda" and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    os.environ.setdefault("MAX_JOBS", str(max(1, os.cpu_count() or 1)))
    from torch.utils import cpp_extension

    if cuda_home:
        cpp_extension.CUDA_HOME = cuda_home  # in case torch was imported with another guess
    print(f"tlkit: building the fused {LABELS[kind]} kernels in {display_path(directory)} (one time, about a minute)...",
          end="", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        cpp_extension.load(
            name=f"tlkit_{kind}", sources=[str(CSRC / name) for name in SOURCES[kind]], build_directory=str(directory),
            is_python_module=False, verbose=verbose,
            **{key: list(flags) for key, flags in FLAGS[kind].items()},  # load() appends to the lists it is given
        )
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        raise
    seconds = time.perf_counter() - start
    print(f" done in {seconds:.0f} s", file=sys.stderr, flush=True)
    return directory / f"tlkit_{kind}.so", seconds


def summarise(exc: BaseException) -> str:
    """The first error line of a compiler log (or the exception's last line), at most 300 characters."""
    text = str(exc).strip().splitlines()
    errors = [line for line in text if "error" in line.lower()]
    return (errors[0] if errors else (text[-1] if text else type(exc).__name__))[:300]


def display_path(path) -> str:
    """``path`` relative to the tlkit checkout, or to ``~``, or to the Python environment; never this machine's
    absolute path (reports and notebooks are shared)."""
    path = Path(path).resolve()
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent if (package.parent / "pyproject.toml").is_file() else None
    for root, label in ((checkout, None), (Path.home().resolve(), "~"), (Path(sys.prefix).resolve(), "<python env>")):
        if root is not None and path.is_relative_to(root):
            relative = path.relative_to(root)
            if label is None:
                return str(relative) if relative.parts else "."
            return str(Path(label, relative))
    return str(Path("…", *path.parts[-2:]))


def _first_line(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[0] if lines else None


def toolchain() -> dict[str, str]:
    """What building the kernels would use here: platform, C++ compiler, ninja, nvcc and CUDA toolkit, the build
    root and the cache keys; paths shown relative to the checkout or ``~``. Used by ``tl.doctor()``."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    ninja = shutil.which("ninja") or (str(Path(sys.executable).parent / "ninja")
                                      if (Path(sys.executable).parent / "ninja").exists() else None)
    cuda_home = find_cuda_home()
    nvcc = None
    if cuda_home:
        out = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"], capture_output=True, text=True,
                             check=False).stdout
        release = [line.strip() for line in out.splitlines() if "release" in line]
        nvcc = f"{release[0] if release else 'nvcc'} at {display_path(cuda_home)}"
    return {
        "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "C++ compiler": (_first_line([compiler, "--version"]) or compiler) if compiler else "not found",
        "ninja": (_first_line([ninja, "--version"]) or "found") if ninja else "not found (pip install ninja)",
        "nvcc": nvcc or "not found (CUDA kernels cannot be built)",
        "build directory": display_path(build_root()),
        "C++ build": build_dir("cpp").name,
        "CUDA build": build_dir("cuda").name,
    }
