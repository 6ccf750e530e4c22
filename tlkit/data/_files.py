"""The one place that says where tlkit's shipped data lives: ``tlkit/data/files/``, read through importlib.resources."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DATA_DIR = Path(str(files("tlkit.data") / "files"))


def data_path(name: str) -> Path:
    """Path of a file shipped in ``tlkit/data/files/``; raises ``FileNotFoundError`` naming it if it is missing."""
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"tlkit's data file {name!r} is missing from {DATA_DIR}: reinstall tlkit")
    return path
