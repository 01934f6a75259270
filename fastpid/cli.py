"""The ``fastpid`` command: ``fastpid pid`` decomposes the columns of a data file;
``fastpid verify`` checks the installation against dit.  Other packages add
subcommands through the ``fastpid.commands`` entry-point group (a callable
that adds its parser to the subparsers and sets ``handler`` and ``needs`` on
it): ``fastpid demo``, the main job, comes from ``fastpid.controller``."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from importlib.metadata import entry_points

COMMANDS = "fastpid.commands"  # entry-point group of the subcommands other packages provide


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastpid", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("pid", help="PID of two source columns about a target column of a CSV or .npz file")
    data.add_argument("file", help="a CSV with a header row, or an .npz of 1-D arrays")
    data.add_argument("--sources", nargs=2, required=True, metavar=("X1", "X2"), help="the two source columns")
    data.add_argument("--target", required=True, metavar="Y", help="the target column")
    data.add_argument("--bins", type=int, default=8, help="symbols for a continuous column (default 8)")
    data.add_argument(
        "--discretize",
        choices=("quantile", "kmeans"),
        default="quantile",
        help="how continuous columns become symbols (default quantile bins)",
    )
    data.add_argument("--bootstrap", type=int, default=0, metavar="B", help="bootstrap resamples for intervals")
    data.add_argument("--permutations", type=int, default=0, metavar="B", help="surrogates for p-values")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    data.set_defaults(handler=pid_command, needs={})
    verify = commands.add_parser("verify", help="compare fastpid with dit's BROJA cone solver")
    verify.add_argument("--random", type=int, default=200, help="number of random joints (default 200)")
    verify.add_argument("--tol", type=float, default=1e-6, help="largest accepted difference in bits")
    verify.add_argument("--backend", default="auto", help="solver backend (default auto)")
    verify.add_argument("--seed", type=int, default=0)
    verify.add_argument("--short", action="store_true", help="print only canonical joints and failures")
    verify.set_defaults(handler=verify_command, needs={"dit": "dit", "ecos": "ecos"})
    for entry in entry_points(group=COMMANDS):
        entry.load()(commands)
    args = parser.parse_args(argv)
    # What the command imports beyond fastpid's own requirements (module: the pip name that installs it).
    missing = [package for module, package in args.needs.items() if importlib.util.find_spec(module) is None]
    if missing:
        print(f"fastpid {args.command} needs {', '.join(missing)}: pip install {' '.join(missing)}", file=sys.stderr)
        return 2
    return args.handler(args)


def verify_command(args) -> int:
    from .verify import run

    return 0 if run(args.random, args.tol, args.backend, args.seed, show_all=not args.short) else 1


def pid_command(args) -> int:
    """The table (or JSON) of the atoms of the file's columns, with optional intervals and p-values."""
    import json

    import torch

    from . import bootstrap, permutation_test, pid
    from .decomposition import ATOM_FIELDS
    from .joints import joint_from_samples
    from .tabular import encode, read_columns

    names = [*args.sources, args.target]
    try:
        columns = read_columns(args.file, names)
        encoded = {name: encode(values, args.bins, args.discretize) for name, values in columns.items()}
    except (OSError, ValueError) as error:
        print(f"fastpid pid: {error}", file=sys.stderr)
        return 2
    x1, x2, y = (torch.from_numpy(encoded[name][0]) for name in names)
    result = pid(joint_from_samples(x1, x2, y))
    report = {
        "file": str(args.file),
        "samples": len(y),
        **{f"symbols {name}": len(encoded[name][1]) for name in names},
        **result.to_dict(),
    }
    atoms = ATOM_FIELDS
    if args.bootstrap:
        low, high = bootstrap(x1, x2, y, n_resamples=args.bootstrap, seed=args.seed, progress=False).basic
        report["basic interval"] = {atom: [float(low[k]), float(high[k])] for k, atom in enumerate(atoms)}
    if args.permutations:
        test = permutation_test(x1, x2, y, n_permutations=args.permutations, seed=args.seed, progress=False)
        report["p_value"] = {atom: float(test.p_value[k]) for k, atom in enumerate(atoms)}
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{args.file}: {len(y):,} samples; X1 = {names[0]} ({len(encoded[names[0]][1])} symbols), "
        f"X2 = {names[1]} ({len(encoded[names[1]][1])}), Y = {names[2]} ({len(encoded[names[2]][1])}); bits"
    )
    header = (
        ["atom", "value"]
        + (["95% basic interval"] if args.bootstrap else [])
        + (["p (permutation)"] if args.permutations else [])
    )
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for atom in atoms:
        cells = [atom, f"{report[atom]:.4f}"]
        if args.bootstrap:
            cells.append("[{:.4f}, {:.4f}]".format(*report["basic interval"][atom]))
        if args.permutations:
            cells.append(f"{report['p_value'][atom]:.3g}")
        print("| " + " | ".join(cells) + " |")
    print(f"gap {report['gap']:.1e} bits (bounds the error of every atom), converged {report['converged']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
