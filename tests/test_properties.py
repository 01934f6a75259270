"""Invariances of the BROJA PID, checked with hypothesis on random joints.

Two answers for the same exact atoms are compared with the tolerance their
certificates give (``certified_bound``: gap_a + gap_b + rounding), not with a
fixed one: a failure here means a broken invariance or a dishonest certificate,
whatever the accuracy of the solve.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIELDS, ROUNDING, atoms_array, certified_bound, field
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastpid
from fastpid.examples import boundary_joint, dirichlet_joint, sparse_joint
from fastpid.references import ATOMS

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def joints(draw, max_size: int = 5):
    """A joint P[x1, x2, y] of 2..max_size symbols per axis: Dirichlet (concentrations
    0.1 to 5), sparse (structural zeros) or boundary (unique2 = 0)."""
    shape = tuple(draw(st.integers(2, max_size)) for _ in range(3))
    kind = draw(st.sampled_from(["dirichlet", "sparse", "boundary"]))
    concentration = draw(st.sampled_from([0.1, 0.5, 1.0, 5.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "dirichlet":
        return dirichlet_joint(rng, shape, concentration)
    if kind == "sparse":
        return sparse_joint(rng, shape, draw(st.sampled_from([0.3, 0.6, 0.9])), concentration)
    return boundary_joint(rng, shape, concentration)


def run(P, backend):
    return fastpid.pid(torch.tensor(np.ascontiguousarray(P)), backend=backend)


def assert_same_atoms(a, b, order=ATOMS):
    """Atoms of ``b`` (in ``order``) equal those of ``a`` up to both certificates."""
    bound = certified_bound(a, b)
    for atom_a, atom_b in zip(ATOMS, order):
        diff = abs(field(a, atom_a) - field(b, atom_b))
        assert diff <= bound, (
            f"{atom_a} vs {atom_b}: {field(a, atom_a)!r} != {field(b, atom_b)!r} ({diff:.3g} > {bound:.3g})"
        )
    assert abs(field(a, "mi") - field(b, "mi")) <= ROUNDING


@SETTINGS
@given(P=joints())
def test_swapping_sources_swaps_uniques(P, backend):
    result, swapped = run(P, backend), run(P.swapaxes(0, 1), backend)
    assert_same_atoms(result, swapped, order=("redundancy", "unique2", "unique1", "synergy"))


@SETTINGS
@given(P=joints(), data=st.data())
def test_relabelling_symbols_changes_nothing(P, backend, data):
    perms = [np.array(data.draw(st.permutations(range(n)), label=f"perm{axis}")) for axis, n in enumerate(P.shape)]
    relabelled = P[np.ix_(*perms)]
    assert_same_atoms(run(P, backend), run(relabelled, backend))


@SETTINGS
@given(P=joints(max_size=4), data=st.data())
def test_zero_mass_symbol_changes_nothing(P, backend, data):
    axes = data.draw(st.lists(st.integers(0, 2), min_size=1, max_size=3), label="axes")
    padded = P
    for axis in axes:
        where = data.draw(st.integers(0, padded.shape[axis]), label="position")
        padded = np.insert(padded, where, 0.0, axis=axis)
    assert_same_atoms(run(P, backend), run(padded, backend))


@SETTINGS
@given(P=joints())
def test_atoms_non_negative_up_to_gap(P, backend):
    result = run(P, backend)
    gap = max(field(result, "gap"), 0.0)
    assert np.all(np.isfinite(atoms_array(result)))
    for atom in ATOMS:
        assert field(result, atom) >= -gap - ROUNDING, f"{atom} = {field(result, atom)!r} < -gap ({gap:.3g})"


@SETTINGS
@given(P=joints(), dtype=st.sampled_from([np.float64, np.float32]))
def test_numpy_in_numpy_out(P, dtype, backend):
    P = P.astype(dtype)
    from_numpy = fastpid.pid(P, backend=backend, return_q=True)
    from_tensor = fastpid.pid(torch.from_numpy(P), backend=backend, return_q=True)
    for name in FIELDS + ("gap", "converged", "iterations", "q"):
        value, expected = getattr(from_numpy, name), getattr(from_tensor, name)
        assert isinstance(value, np.ndarray), f"{name} is {type(value).__name__}, not numpy"
        assert value.dtype == expected.numpy().dtype, name
        np.testing.assert_array_equal(value, expected.numpy(), err_msg=name)
    assert from_numpy.redundancy.dtype == dtype


def test_result_numpy_method(backend):
    P = dirichlet_joint(np.random.default_rng(0), (3, 2, 2))
    result = run(P, backend)
    converted = result.numpy()
    for name in FIELDS + ("gap",):
        assert isinstance(getattr(converted, name), np.ndarray)
        assert float(getattr(converted, name)) == field(result, name)
    assert converted.q is None


@pytest.mark.parametrize("scale", [0.5, 3.0])
@SETTINGS
@given(P=joints(max_size=4))
def test_normalize_is_scale_invariant(P, scale, backend):
    scaled = fastpid.pid(torch.tensor(P * scale), backend=backend, normalize=True)
    assert_same_atoms(run(P, backend), scaled)


@SETTINGS
@given(P=joints(max_size=4), counts=st.integers(10, 10_000))
def test_numpy_list_and_tensor_inputs_agree(P, counts, backend):
    """The same joint as a tensor, a numpy array, nested lists, and as integer counts
    (normalize=True, all three forms) gives the same answer, bit for bit."""
    reference = fastpid.pid(torch.tensor(P), backend=backend)
    for given_as in (P, P.tolist()):
        result = fastpid.pid(given_as, backend=backend)
        for name in FIELDS + ("gap",):
            assert field(result, name) == field(reference, name), name
    integers = np.rint(P * counts).astype(np.int64)
    if integers.sum() == 0:
        return
    expected = fastpid.pid(torch.tensor(integers / integers.sum()), backend=backend)
    for given_as in (integers, integers.tolist(), torch.from_numpy(integers)):
        result = fastpid.pid(given_as, backend=backend, normalize=True)
        for name in FIELDS:
            assert abs(field(result, name) - field(expected, name)) <= certified_bound(result, expected), name
