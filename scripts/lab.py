"""Start JupyterLab on the lessons, bound to 127.0.0.1 (what `make lab` runs; also works as root).

The file browser opens on ``lessons/``: the English lessons at the top, the Chinese edition (中文版) in ``zh/``; the
glossary (术语表) is ``GLOSSARY.md``, the teaching guide ``TEACHING.md`` and its Chinese edition (中文教学指南)
``zh/TEACHING.md``.
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lab_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "jupyter", "lab",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False", "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={ROOT / 'lessons'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args()
    print(f"tlkit: starting JupyterLab on http://127.0.0.1:{args.port}/lab — open the URL with its token "
          "printed below; stop with Ctrl-C.\n"
          "tlkit: English lessons are at the top of the file browser, the Chinese edition (中文版) in zh/; "
          "glossary (术语表): GLOSSARY.md; teaching guide: TEACHING.md, 中文教学指南: zh/TEACHING.md.", flush=True)
    command = lab_command(args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
