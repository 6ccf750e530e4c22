"""`make bench`: run every benchmark script with 2 threads and collect their JSON under benchmarks/results/."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_kernels.py", "bench_classical.py", "bench_kmm.py", "bench_distributed.py"]


def main() -> int:
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    failed = []
    for name in SCRIPTS:
        print(f"\n=== {name} ===", flush=True)
        command = [sys.executable, str(HERE / name), "--json", str(results / name.replace(".py", ".json")), *sys.argv[1:]]
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
