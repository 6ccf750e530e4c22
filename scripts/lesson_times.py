"""Time every lesson: run each ``lessons/NN_*.ipynb`` top to bottom in a fresh kernel and print a table.

    python scripts/lesson_times.py                 # all lessons (`make lesson-times`)
    python scripts/lesson_times.py 01 03           # only lessons whose number or name starts with these

Nothing is written back. A lesson over the budget (90 s, the course's promise for a 2-core CPU) or one that fails is
flagged, and the script then exits 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
BUDGET_SECONDS = 90.0


def run_lesson(path: Path, timeout: float) -> tuple[float, str]:
    """Execute one lesson in a fresh kernel (working directory lessons/); return (wall seconds, error or '')."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=int(timeout), kernel_name="python3", resources={"metadata": {"path": str(LESSONS)}})
    start = time.perf_counter()
    try:
        client.execute()
        error = ""
    except Exception as exc:  # a failing cell: report its error (nbclient's ename, evalue) and go on
        name, value = getattr(exc, "ename", type(exc).__name__), str(getattr(exc, "evalue", exc)).strip()
        error = f"{name}: {value.splitlines()[-1] if value else ''}"
    return time.perf_counter() - start, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="lesson number or name prefixes (default: every lesson)")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds allowed per lesson (default 90)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    paths = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in args.only)]
    if not paths:
        print("no lessons matched", file=sys.stderr)
        return 1
    rows, failed = [], False
    width = max(len(p.stem) for p in paths)
    print(f"{'lesson':<{width}}  {'wall s':>7}  status")
    for path in paths:
        seconds, error = run_lesson(path, timeout=max(args.budget * 4, 300))
        status = f"ERROR {error}" if error else ("OVER BUDGET" if seconds > args.budget else "ok")
        failed |= status != "ok"
        rows.append((path.stem, seconds, status))
        print(f"{path.stem:<{width}}  {seconds:7.1f}  {status}", flush=True)
    total = sum(seconds for _, seconds, _ in rows)
    print(f"{'total':<{width}}  {total:7.1f}  budget {args.budget:.0f} s per lesson")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
