"""The ``fastpid`` command: ``fastpid verify`` checks the installation against dit;
``fastpid demo`` is the main job (verification, the PID of real views, the
two-stage controller against its baselines)."""
from __future__ import annotations

import argparse
import importlib.util
import sys

# What each command imports beyond fastpid's own requirements, and the pip names that install it.
NEEDS = {"verify": {"dit": "dit", "ecos": "ecos"},
         "demo": {"dit": "dit", "ecos": "ecos", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastpid", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="compare fastpid with dit's BROJA cone solver")
    verify.add_argument("--random", type=int, default=200, help="number of random joints (default 200)")
    verify.add_argument("--tol", type=float, default=1e-6, help="largest accepted difference in bits")
    verify.add_argument("--backend", default="auto", help="solver backend (default auto)")
    verify.add_argument("--seed", type=int, default=0)
    verify.add_argument("--short", action="store_true", help="print only canonical joints and failures")
    demo = commands.add_parser("demo", help="the main job: verify (short), PID of UCI views, controller vs baselines")
    demo.add_argument("--out", default="results", help="folder for results.json and the plot (default results)")
    demo.add_argument("--seeds", type=int, default=3, help="training seeds per method and data set (default 3)")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs (default: per data set)")
    demo.add_argument("--random", type=int, default=200, help="random joints in the verification (default 200)")
    demo.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    args = parser.parse_args(argv)
    missing = [package for module, package in NEEDS[args.command].items() if importlib.util.find_spec(module) is None]
    if missing:
        print(f"fastpid {args.command} needs {', '.join(missing)}: pip install {' '.join(missing)}", file=sys.stderr)
        return 2
    if args.command == "verify":
        from .verify import run

        ok = run(args.random, args.tol, args.backend, args.seed, show_all=not args.short)
        return 0 if ok else 1
    if args.command == "demo":
        return demo_command(args)
    return 2


def demo_command(args) -> int:
    """Part 1 (verification against dit), then the controller package's parts 2 and 3."""
    from fastpid.controller.experiment import run_demo

    from .verify import run

    print("== 1. fastpid against dit (BROJA, cone solver) ==")
    lines: list[str] = []
    agrees = run(args.random, show_all=False, print_fn=lambda line: (print(line), lines.append(line)))
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    run_demo(args.out, seeds=tuple(range(args.seeds)), n_resamples=args.resamples,
             verification={"agrees": agrees, "lines": lines}, **overrides)
    return 0 if agrees else 1


if __name__ == "__main__":
    sys.exit(main())
