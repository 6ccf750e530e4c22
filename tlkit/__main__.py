"""Command line: ``python -m tlkit doctor`` prints the environment report; ``python -m tlkit build`` builds the kernels."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tlkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="print versions, compilers, kernel backends and offline data found")
    build = sub.add_parser("build", help="build the fused C++ (and, with nvcc and a GPU, CUDA) kernels")
    build.add_argument("--cuda", choices=["auto", "yes", "no"], default="auto",
                       help="build the CUDA library: auto = only when a GPU is visible")
    build.add_argument("--verbose", action="store_true", help="show the compiler's log")
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from . import doctor

        doctor()
        return 0
    from .kernels import build as build_kernels
    from .kernels._build import summarise

    try:
        built = build_kernels(cuda=args.cuda, verbose=args.verbose)
    except Exception as exc:  # the reason, not a traceback: this is the user-facing build command
        print(f"tlkit build failed: {summarise(exc)}", file=sys.stderr)
        if not args.verbose:
            print("Run `python -m tlkit build --verbose` for the compiler's log.", file=sys.stderr)
        return 1
    for kind, path in built.items():
        print(f"tlkit {'C++' if kind == 'cpp' else 'CUDA'} kernels: ready ({path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
