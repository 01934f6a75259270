"""The two eliminations of the Newton system (docs/pid-math.md, "Solving the
Newton system"): each forced on the same joints, against each other, cvxpy and
exact answers; the rule that picks one; the memory budget; and the torch
reference's one factorisation per step, working set and chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DEVICES, SOLVE_GAP_MAX, SOLVE_TOL, reference_array

import fastpid
from fastpid import solver
from fastpid.examples import accuracy_set, boundary_joint, degenerate_joints, dirichlet_joint
from fastpid.references import ATOMS

ELIMINATIONS = ("side", "pairs")
CVXPY_SHAPES = [(6, 5, 40), (3, 3, 80)]  # within cvxpy's reach in seconds (cvxpy takes ~15 s a joint at 3×4×200)
MANY_CLASS_SHAPES = CVXPY_SHAPES + [(4, 3, 120), (3, 4, 200), (10, 10, 31), (20, 20, 14)]
CVXPY_ACCURACY = 1e-7  # bits: the bar for float64 answers against cvxpy


def many_class_joints(shape, rng) -> list[tuple[str, np.ndarray]]:
    """Dense Dirichlet 0.1 to 5, a sparse plug-in joint, a near-boundary one and degenerate ones."""
    joints = [(f"dirichlet{c}", dirichlet_joint(rng, shape, c)) for c in (0.1, 1.0, 5.0)]
    n1, n2, ny = shape
    samples = 4 * ny
    y = rng.integers(ny, size=samples)
    x1, x2 = (y + rng.integers(2, size=samples)) % n1, (y * 3 + rng.integers(2, size=samples)) % n2
    plugin = np.zeros(shape)
    np.add.at(plugin, (x1, x2, y), 1.0 / samples)
    joints += [("plugin", plugin), ("boundary", boundary_joint(rng, shape))]
    degenerate = degenerate_joints(shape, rng)
    joints += [(name, degenerate[name]) for name in ("constant_target", "empty_target_class", "independent_target")]
    return joints


def solve_with(monkeypatch, elimination: str, p: torch.Tensor, tol: float = SOLVE_TOL) -> solver.Solution:
    monkeypatch.setenv("FASTPID_ELIMINATION", elimination)
    return solver.Solution(*torch.ops.fastpid.broja_solve(p.contiguous(), tol, 100, solver.PATIENCE))


@pytest.mark.parametrize("shape", CVXPY_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("elimination", ELIMINATIONS)
def test_many_class_joints_match_cvxpy(monkeypatch, shape, elimination):
    monkeypatch.setenv("FASTPID_ELIMINATION", elimination)
    for name, P in many_class_joints(shape, np.random.default_rng(11)):
        result = fastpid.pid(torch.tensor(P), backend="cpu", tol=1e-10)
        ours = np.array([float(getattr(result, atom)) for atom in ATOMS])
        assert float(result.gap) <= 1e-9, name
        np.testing.assert_allclose(
            ours, reference_array("cvxpy", f"many/{name}", P), rtol=0, atol=CVXPY_ACCURACY, err_msg=name
        )


def assert_same_value(ours: solver.Solution, other: solver.Solution, p: torch.Tensor, name: str) -> int:
    """Both certified to SOLVE_TOL (or both not), V within the sum of their gaps;
    returns how many more steps ``ours`` took."""
    support = solver.Support.of(p)
    _, value, gap = solver.certificate(ours.lam1, ours.lam2, ours.w, support)
    _, other_value, other_gap = solver.certificate(other.lam1, other.lam2, other.w, support)
    assert torch.equal(ours.converged, other.converged) and ours.converged.all(), name
    assert gap.max() <= SOLVE_GAP_MAX and other_gap.max() <= SOLVE_GAP_MAX, (name, gap, other_gap)
    assert (value - other_value).abs().max() <= (gap + other_gap).max() + 1e-12, name
    return int((ours.iterations - other.iterations).sum())


def test_eliminations_agree_joint_by_joint(monkeypatch):
    """The accuracy families and many-class joints: the same certified values
    from either elimination, in the compiled op and in the torch reference, with
    about as many Newton steps in all (rounding moves single joints by a step or
    two; measured: 3 % more in the op, as many in the reference)."""
    rng = np.random.default_rng(5)
    joints = accuracy_set(rng, max_cells=2500)
    for shape in MANY_CLASS_SHAPES:
        joints += many_class_joints(shape, rng)
    extra, total = {"op": 0, "torch": 0}, 0
    for name, P in joints:
        p = torch.tensor(P)[None]
        side, pairs = (solve_with(monkeypatch, e, p) for e in ELIMINATIONS)
        extra["op"] += assert_same_value(pairs, side, p, name)
        extra["torch"] += assert_same_value(solver.solve(p, tol=SOLVE_TOL, elimination="pairs"), side, p, name)
        total += int(side.iterations.sum())
    assert all(abs(more) <= 0.05 * total for more in extra.values()), (extra, total)


def test_large_many_class_joint(monkeypatch):
    """20×20×300, where the side elimination would take minutes: the compiled op
    and the torch reference, both by the pair elimination, agree within their gaps."""
    p = torch.tensor(dirichlet_joint(np.random.default_rng(3), (20, 20, 300), 0.7))[None]
    ours = solve_with(monkeypatch, "pairs", p, 1e-9)
    reference = solver.solve(p, tol=1e-9, elimination="pairs")
    support = solver.Support.of(p)
    _, value, gap = solver.certificate(ours.lam1, ours.lam2, ours.w, support)
    _, ref_value, ref_gap = solver.certificate(reference.lam1, reference.lam2, reference.w, support)
    assert ours.converged.all() and reference.converged.all()
    assert gap.item() <= 1e-9 and ref_gap.item() <= 1e-9
    assert abs(value.item() - ref_value.item()) <= gap.item() + ref_gap.item() + 1e-12
    assert abs(int(ours.iterations) - int(reference.iterations)) <= 1


@pytest.mark.parametrize("n1, n2", [(60, 25), (130, 10), (140, 10)])
def test_copy_joints_are_exact(n1, n2):
    """y = (x1, x2) uniform (a peer project's test joints, up to ny = 1,400):
    U1 = log2 n1, U2 = log2 n2, R = S = 0."""
    p = torch.zeros(n1, n2, n1 * n2, dtype=torch.float64)
    x1, x2 = torch.meshgrid(torch.arange(n1), torch.arange(n2), indexing="ij")
    p[x1, x2, x1 * n2 + x2] = 1.0 / (n1 * n2)
    result = fastpid.pid(p, backend="cpu")
    assert torch.ops.fastpid.broja_workspace(n1, n2, n1 * n2)[1] == 1  # the pair elimination
    expected = {"redundancy": 0.0, "unique1": np.log2(n1), "unique2": np.log2(n2), "synergy": 0.0}
    for atom, value in expected.items():
        assert abs(float(getattr(result, atom)) - value) <= 1e-9, atom
    assert bool(result.converged)


def test_the_rule_is_the_same_in_python_and_cpp(monkeypatch):
    monkeypatch.delenv("FASTPID_ELIMINATION", raising=False)
    for n1 in (2, 5, 10, 20, 40):
        for n2 in (2, 7, 20):
            for ny in (2, 6, 12, 31, 101, 400):
                expected = 1 if solver.choose_elimination(n1, n2, ny) == "pairs" else 0
                assert torch.ops.fastpid.broja_workspace(n1, n2, ny)[1] == expected, (n1, n2, ny)


def test_the_rule_picks_by_cost():
    """Few classes: the side elimination; many classes and large cubes: the pair one."""
    assert [solver.choose_elimination(*s) for s in [(5, 5, 5), (20, 20, 6), (10, 10, 6), (8, 8, 8)]] == ["side"] * 4
    assert [solver.choose_elimination(*s) for s in [(20, 20, 101), (20, 20, 1000), (140, 10, 1400), (32, 32, 32)]] == [
        "pairs"
    ] * 4
    for shape in [(20, 20, 31), (32, 32, 32), (20, 20, 6)]:
        cheaper = solver.pairs_flops(*shape) * solver.PAIRS_ADVANTAGE < solver.side_flops(*shape)
        assert (solver.choose_elimination(*shape) == "pairs") == cheaper


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_a_joint_past_the_memory_budget_is_a_value_error(monkeypatch, backend):
    monkeypatch.setenv("FASTPID_MEMORY_GIB", "0.001")
    p = torch.tensor(dirichlet_joint(np.random.default_rng(0), (20, 20, 101)))
    with pytest.raises(
        ValueError, match=r"20×20×101 joint needs [0-9.]+ GiB .*budget of 0\.001 GiB.*FASTPID_MEMORY_GIB"
    ):
        fastpid.pid(p, backend=backend)


def test_a_joint_past_the_index_range_is_a_value_error():
    for shape in [(2**31, 2, 2), (2**40, 2**40, 2**40), (50_000, 50_000, 2)]:
        with pytest.raises(ValueError, match="index range"):
            torch.ops.fastpid.broja_workspace(*shape)
    bytes_, elimination = torch.ops.fastpid.broja_workspace(20, 20, 1000)
    assert elimination == 1 and bytes_ < 2**30


def test_the_torch_solve_factorises_once_per_step(monkeypatch):
    calls = []
    original = solver.factorize

    def counted(*args, **kwargs):
        calls.append(args[0].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(solver, "factorize", counted)
    for elimination in ELIMINATIONS:
        calls.clear()
        p = torch.tensor(dirichlet_joint(np.random.default_rng(1), (6, 5, 20)))[None]
        solution = solver.solve(p, elimination=elimination)
        assert solution.converged.all() and len(calls) == int(solution.iterations)


def newton_system(rng, shape, batch=3, device="cpu"):
    """A batch of joints with an absent x1, a masked λ1 and an empty pair, at a random interior
    iterate (w > 0, h > 0): the pieces ``solver.factorize`` takes, and a right-hand
    side that vanishes off the free variables."""
    p = torch.tensor(np.stack([dirichlet_joint(rng, shape, 0.3) for _ in range(batch)]))
    p[0, 0] = 0.0
    p[1, 0, :, 0] = 0.0
    p[1, 1, 1, :] = 0.0
    p = (p / p.sum((1, 2, 3), keepdim=True)).to(device)
    support = solver.Support.of(p)
    lam1, lam2, w = solver.analytic_start(support)
    g, s = solver.pair_softmax(lam1 + 0.1 * torch.randn_like(lam1), lam2 + 0.1 * torch.randn_like(lam2), support)
    h = -g + 0.3 + ~support.pair
    w = (w + 0.01) * support.pair
    rhs = torch.randn(batch, support.free.shape[1], dtype=torch.float64).to(device) * support.free
    return w, h, s, support, rhs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 5, 4), (5, 3, 4), (4, 4, 1), (6, 6, 3), (12, 9, 6)], ids=str)
def test_the_side_factor_solves_the_dense_system(shape, device):
    """SideFactor (the Newton matrix by blocks, the larger side eliminated) against
    a dense solve of ``newton_matrix``: E = x1's side, x2's, and ties, one class,
    absent symbols, masked variables and empty pairs; on a GPU, cuBLAS and cuSOLVER's."""
    w, h, s, support, rhs = newton_system(np.random.default_rng(3), shape, device=device)
    dense = torch.linalg.solve(solver.newton_matrix(w, h, s, support), rhs[..., None])[..., 0]
    x = solver.SideFactor(w, h, s, support).solve(rhs)
    assert torch.allclose(x, dense, rtol=0, atol=1e-12 * dense.abs().max())
    assert torch.equal(x * ~support.free, torch.zeros_like(x))


def test_a_joint_that_needs_the_shift_leaves_its_batch_mates_alone():
    """A joint with a zero block (every pair of one x1 without mass) fails the
    unshifted factorisation: it alone is factorised again with the shift raised
    (its block's factor is then REGULARIZATION^(1/2) I), and the others' factors
    and solves are those they have alone."""
    w, h, s, support, rhs = newton_system(np.random.default_rng(4), (5, 4, 3))  # x1's side eliminated
    w[2, 1] = 0.0
    factor = solver.SideFactor(w, h, s, support)
    assert all(t.isfinite().all() for t in (factor.factor_e, factor.g, factor.factor_k))
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(factor.factor_e[2, 1], solver.REGULARIZATION**0.5 * eye, rtol=1e-15, atol=0)
    for joint in (0, 1):
        alone = solver.SideFactor(w[[joint]], h[[joint]], s[[joint]], support.take([joint]))
        assert torch.equal(alone.factor_k[0], factor.factor_k[joint])
        assert torch.equal(alone.solve(rhs[[joint]])[0], factor.solve(rhs)[joint])


def test_only_near_singular_blocks_get_the_shift(monkeypatch):
    """δ goes only on the blocks D_y whose scaled inverse's Frobenius norm
    exceeds PAIRS_SHIFT_FREE_NORM: none on a dense Dirichlet joint, at any step; on a
    nearly deterministic joint, none at the start and some once pairs' masses
    have fallen, and the solve still converges."""
    shifted = []
    original = solver.factorize

    def recorded(*args, **kwargs):
        factor = original(*args, **kwargs)
        shifted.append(factor.shifted.float().mean().item())
        return factor

    monkeypatch.setattr(solver, "factorize", recorded)
    p = torch.tensor(dirichlet_joint(np.random.default_rng(2), (8, 8, 30), 0.7))[None]
    assert solver.solve(p, elimination="pairs").converged.all()
    assert max(shifted) == 0
    shifted.clear()
    n, noise = 8, 1e-4
    modular = torch.zeros(n, n, 16, dtype=torch.float64)
    x1, x2 = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    modular[x1, x2, (x1 + x2) % 16] = 1.0 / n**2
    p = ((1 - noise) * modular + noise / modular.numel())[None]
    assert solver.solve(p, tol=SOLVE_TOL, elimination="pairs").converged.all()
    assert shifted[0] == 0 and max(shifted) > 0.5, shifted


def test_stopped_joints_leave_the_working_set():
    sizes = []

    def pair_softmax(lam1, lam2, support):
        sizes.append(lam1.shape[0])
        return solver.pair_softmax(lam1, lam2, support)

    rng = np.random.default_rng(2)
    easy = dirichlet_joint(rng, (4, 4, 4), 5.0)
    hard = dirichlet_joint(rng, (4, 4, 4), 0.05)
    passes = solver.Passes(pair_softmax=pair_softmax)
    solution = solver.solve(torch.tensor(np.stack([easy, hard])), passes=passes)
    assert solution.converged.all() and solution.iterations[0] < solution.iterations[1]
    assert sizes[0] == 2 and sizes[-1] == 1


def test_a_batch_over_the_budget_is_solved_in_chunks(monkeypatch):
    joints = torch.tensor(np.stack([dirichlet_joint(np.random.default_rng(i), (5, 4, 6)) for i in range(10)]))
    whole = solver.solve(joints)
    chunks = []
    original = solver._solve_batch
    monkeypatch.setattr(solver, "_solve_batch", lambda p, *a: chunks.append(len(p)) or original(p, *a))
    per_joint = solver.working_set_bytes(5, 4, 6, solver.default_elimination(5, 4, 6))
    monkeypatch.setenv("FASTPID_MEMORY_GIB", str(3.5 * per_joint / 2**30))
    chunked = solver.solve(joints)
    assert chunks == [3, 3, 3, 1]
    # The same iterations; values within rounding (batched kernels may block differently by batch size).
    assert torch.equal(chunked.iterations, whole.iterations) and chunked.converged.all()
    for name in ("lam1", "lam2", "w"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name), rtol=0, atol=1e-9)


def test_a_mixed_batch_equals_one_joint_at_a_time(monkeypatch):
    monkeypatch.delenv("FASTPID_ELIMINATION", raising=False)
    rng = np.random.default_rng(9)
    shape = (4, 3, 120)
    joints = torch.tensor(np.stack([P for _, P in many_class_joints(shape, rng)]))
    assert solver.choose_elimination(*shape) == "pairs"
    batched = solver.Solution(*torch.ops.fastpid.broja_solve(joints, SOLVE_TOL, 100, solver.PATIENCE))
    for i in range(len(joints)):
        one = solver.Solution(
            *torch.ops.fastpid.broja_solve(joints[i : i + 1].contiguous(), SOLVE_TOL, 100, solver.PATIENCE)
        )
        for name in solver.SOLUTION_FIELDS:
            assert torch.equal(getattr(batched, name)[i : i + 1], getattr(one, name)), (i, name)
    assert batched.converged.all()


def test_default_tolerance_on_a_many_class_joint_in_bits():
    """fastpid.pid's default: gap ≤ 1e-8 bits on a 20×20×101 joint (pair elimination)."""
    result = fastpid.pid(torch.tensor(dirichlet_joint(np.random.default_rng(4), (20, 20, 101), 0.7)), backend="cpu")
    assert bool(result.converged) and float(result.gap) <= 1e-8


@pytest.mark.parametrize("noise", [1e-2, 1e-4])
def test_nearly_deterministic_many_class_joints_converge_in_the_pair_elimination(noise):
    """y = (x1 + x2) mod 100 with a little uniform noise: pairs' masses fall towards 0 and
    D_y towards singularity; the shifted blocks and refinement against M still converge,
    with no side elimination to fall back on (the reference's batch solve has none)."""
    n = 20
    exact = torch.zeros(n, n, 100, dtype=torch.float64)
    x1, x2 = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    exact[x1, x2, (x1 + x2) % 100] = 1.0 / n**2
    p = ((1 - noise) * exact + noise / exact.numel())[None]
    solution = solver._solve_batch(p, SOLVE_TOL, 100, solver.PATIENCE, solver.TORCH_PASSES, "pairs")
    _, _, gap = solver.certificate(solution.lam1, solution.lam2, solution.w, solver.Support.of(p))
    assert solution.converged.all() and gap.item() <= SOLVE_TOL
