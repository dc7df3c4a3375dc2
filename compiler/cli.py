"""The ``braze`` command line."""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="braze", description="braze: kernel fusion and autotuning for "
                                 "Transformer inference")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="compile a small Llama, check it against eager, time it", add_help=False)
    args, rest = ap.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "demo":
        from braze.compiler.demo import main as demo

        return demo(rest)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
