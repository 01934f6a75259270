"""``fastpid demo``, the main job, as a subcommand of the ``fastpid`` command
(entry-point group ``fastpid.commands``): verification against dit (part 1),
then the PID of two real views and the two-stage controller against its
baselines (parts 2 and 3, ``fastpid.controller.experiment``)."""

from __future__ import annotations

# What the demo imports beyond fastpid's own requirements (module: the pip name that installs it).
NEEDS = {"dit": "dit", "ecos": "ecos", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def register(commands) -> None:
    """Add ``demo`` to the ``fastpid`` command's subparsers."""
    demo = commands.add_parser("demo", help="the main job: verify (short), PID of UCI views, controller vs baselines")
    demo.add_argument("--out", default="results", help="folder for results.json and the plot (default results)")
    demo.add_argument("--seeds", type=int, default=5, help="training seeds per method and data set (default 5)")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs (default: per data set)")
    demo.add_argument("--random", type=int, default=200, help="random joints in the verification (default 200)")
    demo.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    demo.set_defaults(handler=run, needs=NEEDS)


def run(args) -> int:
    """Part 1 (verification against dit), then parts 2 and 3, on one thread: the demo's
    MLPs and probes are too small for a second one to pay (docs/controller.md)."""
    import torch

    from fastpid.verify import run as verify

    torch.set_num_threads(1)
    from .experiment import run_demo

    print("== 1. fastpid against dit (BROJA, cone solver) ==")
    lines: list[str] = []
    agrees = verify(args.random, show_all=False, print_fn=lambda line: (print(line), lines.append(line)))
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    run_demo(
        args.out,
        seeds=tuple(range(args.seeds)),
        n_resamples=args.resamples,
        verification={"agrees": agrees, "lines": lines},
        **overrides,
    )
    return 0 if agrees else 1
