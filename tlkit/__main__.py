"""Command line: ``python -m tlkit doctor`` prints the environment report; ``python -m tlkit build`` builds the kernels."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tlkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="print versions, compilers, kernel backends and offline data found")
    build = sub.add_parser("build", help="build the fused C++ (and, with nvcc and a GPU, CUDA) kernels")
    build.add_argument("--cuda", choices=["auto", "yes", "no"], default="auto",
                       help="build the CUDA extension: auto = only when a GPU and nvcc are present")
    build.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from . import doctor

        doctor()
        return 0
    from .kernels import _build

    ok = _build.build_all(cuda=args.cuda, verbose=args.verbose)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
