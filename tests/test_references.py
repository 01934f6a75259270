"""The reference solvers agree with each other and with the canonical values; the
example generators keep their promises; the paper's baseline gets the easy gates."""

import numpy as np
import pytest

dit = pytest.importorskip("dit")
pytest.importorskip("cvxpy")

from bench.paper_solver import paper_pid  # noqa: E402
from fastpid.examples import (  # noqa: E402
    CANONICAL,
    CANONICAL_VALUES,
    DIT_BIVARIATES,
    SHAPES,
    accuracy_set,
    boundary_joint,
    degenerate_joints,
    dirichlet_joint,
    sparse_joint,
)
from fastpid.references import ATOMS, cvxpy_pid, dit_pid, dit_to_joint, plugin_information  # noqa: E402

ATOL = 1e-6  # bits


def small_joints() -> dict:
    rng = np.random.default_rng(0)
    joints = {
        "dirichlet0.3_3x3x3": dirichlet_joint(rng, (3, 3, 3), 0.3),
        "dirichlet1_2x3x4": dirichlet_joint(rng, (2, 3, 4), 1.0),
        "dirichlet5_4x4x4": dirichlet_joint(rng, (4, 4, 4), 5.0),
        "sparse0.6_4x3x5": sparse_joint(rng, (4, 3, 5), 0.6),
        "boundary_3x4x2": boundary_joint(rng, (3, 4, 2)),
    }
    joints.update(degenerate_joints((2, 3, 4)))
    return joints


def assert_atoms_close(atoms, expected, atol=ATOL):
    assert max(abs(atoms[atom] - value) for atom, value in zip(ATOMS, expected)) < atol


@pytest.mark.parametrize("name", sorted(DIT_BIVARIATES))
def test_canonical_joints_are_dits_bivariates(name):
    assert np.array_equal(CANONICAL[name], dit_to_joint(dit.pid.bivariates[DIT_BIVARIATES[name]]))


def test_unq_is_dits_unique_1_with_sources_swapped():
    assert np.array_equal(CANONICAL["UNQ"], dit_to_joint(dit.pid.bivariates["unique 1"]).swapaxes(0, 1))


@pytest.mark.parametrize("solver", [cvxpy_pid, dit_pid])
@pytest.mark.parametrize("name", sorted(CANONICAL_VALUES))
def test_canonical_values(solver, name):
    assert_atoms_close(solver(CANONICAL[name]), CANONICAL_VALUES[name])


SMALL_JOINTS = small_joints()


@pytest.mark.parametrize("P", SMALL_JOINTS.values(), ids=SMALL_JOINTS.keys())
def test_dit_and_cvxpy_agree(P):
    reference = cvxpy_pid(P)
    assert_atoms_close(dit_pid(P), [reference[atom] for atom in ATOMS])


def test_atoms_add_up_to_the_informations():
    P = dirichlet_joint(np.random.default_rng(1), (3, 4, 3))
    atoms, info = cvxpy_pid(P), plugin_information(P)
    assert abs(atoms["redundancy"] + atoms["unique1"] - info["mi_x1"]) < 1e-12
    assert abs(atoms["redundancy"] + atoms["unique2"] - info["mi_x2"]) < 1e-12
    assert abs(sum(atoms[atom] for atom in ATOMS) - atoms["mi"]) < 1e-12


def test_plugin_information_matches_dit():
    P = dirichlet_joint(np.random.default_rng(2), (3, 2, 4))
    d = dit.Distribution.from_ndarray(P)
    info = plugin_information(P)
    assert info["entropy_y"] == pytest.approx(dit.shannon.entropy(d, [2]), abs=1e-12)
    assert info["mi_x1"] == pytest.approx(dit.shannon.mutual_information(d, [0], [2]), abs=1e-12)
    assert info["mi_x2"] == pytest.approx(dit.shannon.mutual_information(d, [1], [2]), abs=1e-12)
    assert info["mi"] == pytest.approx(dit.shannon.mutual_information(d, [0, 1], [2]), abs=1e-12)


@pytest.mark.parametrize("solver", [cvxpy_pid, dit_pid])
def test_zero_mass_symbols_change_nothing(solver):
    P = dirichlet_joint(np.random.default_rng(3), (3, 2, 3))
    padded = np.zeros((5, 4, 4))
    padded[1:4, 2:4, :3] = P
    reference = solver(P)
    assert_atoms_close(solver(padded), [reference[atom] for atom in ATOMS], atol=1e-9)


def assert_is_joint(P, shape):
    assert P.shape == tuple(shape) and P.dtype == np.float64
    assert np.all(P >= 0) and P.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 7, 2), (6, 4, 5)])
def test_generators_give_joints_of_the_requested_shape(shape):
    rng = np.random.default_rng(4)
    for P in [dirichlet_joint(rng, shape, 0.1), sparse_joint(rng, shape, 0.5), boundary_joint(rng, shape)]:
        assert_is_joint(P, shape)
    for P in degenerate_joints(shape).values():
        assert_is_joint(P, shape)


def test_sparse_joint_keeps_one_cell():
    rng = np.random.default_rng(5)
    assert (sparse_joint(rng, (4, 4, 4), 0.9) == 0).sum() > 32
    assert (sparse_joint(rng, (4, 4, 4), 1.0) > 0).sum() == 1


@pytest.mark.parametrize("shape", [(3, 3, 3), (4, 6, 2)])
def test_boundary_joint_has_no_unique2(shape):
    P = boundary_joint(np.random.default_rng(6), shape)
    atoms = cvxpy_pid(P)
    assert abs(atoms["unique2"]) < 1e-7 and atoms["unique1"] > 1e-3


def test_degenerate_joints_are_degenerate():
    cases = degenerate_joints((3, 4, 5))
    assert cases["empty_x1_symbol"][0].sum() == 0
    assert cases["empty_x2_symbol"][:, 0].sum() == 0
    assert cases["empty_target_class"][..., 0].sum() == 0
    assert cases["point_mass"].max() == 1
    assert cases["constant_target"][..., 1:].sum() == 0
    independent = cases["independent_target"]
    np.testing.assert_allclose(independent, independent.sum(2, keepdims=True) * independent.sum((0, 1)), atol=1e-15)
    assert_atoms_close(cvxpy_pid(independent), [0, 0, 0, 0])


def test_accuracy_set():
    full = accuracy_set(np.random.default_rng(7))
    small = accuracy_set(np.random.default_rng(7), max_cells=125)
    names = [name for name, _ in full]
    assert len(set(names)) == len(names)
    assert {P.shape for _, P in full} >= set(SHAPES) >= {(2, 2, 2), (32, 32, 32), (32, 8, 16)}
    assert all(P.size <= 125 for _, P in small)
    full_by_name = dict(full)
    for name, P in small:
        assert np.array_equal(P, full_by_name[name])
    for _, P in full:
        assert_is_joint(P, P.shape)


@pytest.mark.parametrize("name", ["XOR", "AND"])
def test_paper_solver_on_gates(name):
    assert_atoms_close(paper_pid(CANONICAL[name]), CANONICAL_VALUES[name], atol=0.1)
