"""``fastpid verify``: check this installation against dit's BROJA cone solver.

Runs ``fastpid.pid`` and ``dit.pid.PID_BROJA(..., method="cone")`` on the
canonical joints and on random small joints (Dirichlet, sparse, boundary),
prints one row per joint and fails on any atom that differs by more than
``tol`` bits or any certified gap above ``tol``; joints whose gap met ``tol``
but not ``fastpid.pid``'s tighter default are marked, not failed.
"""

from __future__ import annotations

import time

import numpy as np

from . import examples
from .decomposition import pid
from .references import ATOMS, dit_pid

RANDOM_SHAPES = [(2, 2, 2), (3, 3, 2), (2, 4, 3), (4, 4, 4), (5, 5, 5), (3, 6, 4)]
RANDOM_CONCENTRATIONS = (0.5, 1.0, 5.0)


def verification_joints(n_random: int, seed: int = 0):
    """(name, P) pairs: the canonical joints, then ``n_random`` random small joints."""
    rng = np.random.default_rng(seed)
    joints = list(examples.CANONICAL.items())
    for i in range(n_random):
        shape = RANDOM_SHAPES[i % len(RANDOM_SHAPES)]
        kind = i % 4
        if kind == 0 or kind == 1:
            alpha = RANDOM_CONCENTRATIONS[(i // 4) % len(RANDOM_CONCENTRATIONS)]
            joints.append(
                (f"dirichlet{alpha}-{'x'.join(map(str, shape))}", examples.dirichlet_joint(rng, shape, alpha))
            )
        elif kind == 2:
            joints.append((f"sparse-{'x'.join(map(str, shape))}", examples.sparse_joint(rng, shape, 0.5)))
        else:
            joints.append((f"boundary-{'x'.join(map(str, shape))}", examples.boundary_joint(rng, shape)))
    return joints


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run(
    n_random: int = 200, tol: float = 1e-6, backend: str = "auto", seed: int = 0, show_all: bool = True, print_fn=print
) -> bool:
    """Compare with dit on every verification joint; print the table; True if all agree."""
    header = (
        f"{'case':<22}{'ours R, U1, U2, S (bits)':>44}{'dit R, U1, U2, S (bits)':>44}"
        f"{'max diff':>10}{'gap':>10}{'ours s':>9}{'dit s':>8}"
    )
    print_fn(header)
    failures, worst, time_ours, time_dit = [], 0.0, 0.0, 0.0
    for name, joint in verification_joints(n_random, seed):
        ours, t_ours = _timed(pid, joint, backend=backend)
        theirs, t_dit = _timed(dit_pid, joint)
        mine = np.array([float(getattr(ours, atom)) for atom in ATOMS])
        ref = np.array([theirs[atom] for atom in ATOMS])
        diff, gap = float(np.abs(mine - ref).max()), float(ours.gap)
        worst, time_ours, time_dit = max(worst, diff), time_ours + t_ours, time_dit + t_dit
        bad = diff > tol or gap > tol
        if bad:
            failures.append(name)
        flag = "  MISMATCH" if bad else "" if bool(ours.converged) else "  (gap above pid's tol)"
        if show_all or flag or name in examples.CANONICAL:
            print_fn(
                f"{name:<22}{_atoms(mine):>44}{_atoms(ref):>44}{diff:>10.1e}{gap:>10.1e}"
                f"{t_ours:>9.4f}{t_dit:>8.4f}{flag}"
            )
    count = len(examples.CANONICAL) + n_random
    print_fn(
        f"{count} joints, worst difference {worst:.2e} bits (tolerance {tol:.0e}); "
        f"time fastpid {time_ours:.2f} s, dit cone {time_dit:.2f} s"
    )
    if failures:
        print_fn(f"FAILED: {len(failures)} joint(s) disagree with dit: {', '.join(failures[:10])}")
    else:
        print_fn("OK: fastpid agrees with dit on every joint")
    return not failures


def _atoms(values) -> str:
    return " ".join(f"{v:10.6f}" for v in values)
