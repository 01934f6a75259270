"""Bad input is refused with an error that names the problem and what was expected."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import FIELDS, certified_bound, field

import fastpid
from fastpid import backends
from fastpid.examples import CANONICAL, dirichlet_joint

GOOD = dirichlet_joint(np.random.default_rng(0), (3, 2, 4))


def good(dtype=torch.float64, batch=()):
    return torch.tensor(GOOD, dtype=dtype).expand(*batch, *GOOD.shape).clone()


# --------------------------------------------------------------------------
# Mass: negative, NaN, infinite, zero, not summing to 1.


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(
    "bad,match",
    [
        (-0.1, r"non-negative.*negative mass"),
        (float("nan"), r"finite.*NaN or infinite"),
        (float("inf"), r"finite.*NaN or infinite"),
        (float("-inf"), r"finite.*NaN or infinite"),
    ],
    ids=["negative", "nan", "inf", "-inf"],
)
def test_bad_mass(bad, match, dtype, backend):
    P = good(dtype)
    P[1, 0, 2] = bad
    with pytest.raises(ValueError, match=match):
        fastpid.pid(P, backend=backend)
    with pytest.raises(ValueError, match=match):  # normalize does not excuse it
        fastpid.pid(P, backend=backend, normalize=True)


def test_bad_mass_numpy(backend):
    P = GOOD.copy()
    P[0, 0, 0] = -1e-3
    with pytest.raises(ValueError, match=r"non-negative"):
        fastpid.pid(P, backend=backend)


def test_zero_mass(backend):
    with pytest.raises(ValueError, match=r"must carry mass.*sums to 0"):
        fastpid.pid(torch.zeros(2, 2, 2, dtype=torch.float64), backend=backend)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_total_mass_overflow(dtype, backend):
    """Finite cells whose sum overflows are refused, even with normalize=True (it would give 0 / inf)."""
    P = good(dtype, batch=(2,))
    P[1, 0, 0, :2] = 0.75 * torch.finfo(dtype).max
    for normalize in (False, True):
        with pytest.raises(ValueError, match=r"total mass overflows.*joint \(1,\) sums to inf"):
            fastpid.pid(P, backend=backend, normalize=normalize)


@pytest.mark.parametrize("scale", [0.5, 2.0, 1 + 1e-3])
def test_sum_not_one(scale, backend):
    with pytest.raises(ValueError, match=r"must sum to 1.*sums to .*normalize=True"):
        fastpid.pid(good() * scale, backend=backend)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("scale", [0.5, 2.0, 1e-3, 1e3])
def test_normalize_accepts_any_total(scale, dtype, backend):
    reference = fastpid.pid(good(dtype), backend=backend)
    scaled = fastpid.pid(good(dtype) * scale, backend=backend, normalize=True)
    bound = certified_bound(reference, scaled) + (1e-6 if dtype == torch.float32 else 0.0)
    for name in FIELDS:
        assert abs(field(scaled, name) - field(reference, name)) <= bound, name


def test_float_rounding_of_the_total_is_accepted(backend):
    """Joints within float rounding of 1 need no normalize=True."""
    P = good() * (1 + 1e-9)
    result = fastpid.pid(P, backend=backend)
    assert bool(result.converged)


def test_normalize_with_counts(backend):
    counts = torch.tensor(CANONICAL["AND"] * 4)
    result = fastpid.pid(counts, backend=backend, normalize=True)
    expected = fastpid.pid(torch.tensor(CANONICAL["AND"]), backend=backend)
    for name in FIELDS:
        assert field(result, name) == pytest.approx(field(expected, name), abs=1e-12)


# --------------------------------------------------------------------------
# Shapes.


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)], ids=str)
def test_fewer_than_three_dims(shape, backend):
    P = torch.ones(shape, dtype=torch.float64)
    P = P / P.sum()
    with pytest.raises(ValueError, match=r"shape \(\.\.\., n1, n2, ny\).*at least 3 dimensions.*got shape"):
        fastpid.pid(P, backend=backend)


@pytest.mark.parametrize("shape", [(0, 2, 2), (2, 0, 2), (2, 2, 0), (0, 2, 2, 2)], ids=str)
def test_empty_axis(shape, backend):
    with pytest.raises(ValueError, match=r"empty axis.*every axis needs at least one entry"):
        fastpid.pid(torch.zeros(shape, dtype=torch.float64), backend=backend)


def test_sequence_of_different_shapes(backend):
    with pytest.raises(ValueError, match=r"different shapes.*pad them to one shape"):
        fastpid.pid([good(), torch.full((2, 2, 2), 1 / 8, dtype=torch.float64)], backend=backend)


# --------------------------------------------------------------------------
# Dtypes.


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex128], ids=str)
def test_bad_tensor_dtype(dtype, backend):
    P = torch.ones(2, 2, 2).to(dtype)
    with pytest.raises(TypeError, match=rf"float32 or float64.*{str(dtype).replace('torch.', '')}"):
        fastpid.pid(P, backend=backend)


@pytest.mark.parametrize("dtype", [np.bool_, np.complex128], ids=lambda d: np.dtype(d).name)
def test_bad_numpy_dtype(dtype, backend):
    P = np.ones((2, 2, 2)).astype(dtype)
    with pytest.raises(TypeError, match=rf"float32 or float64.*{np.dtype(dtype).name}"):
        fastpid.pid(P, backend=backend)


@pytest.mark.parametrize(
    "P",
    [
        torch.ones(2, 2, 2, dtype=torch.int64),
        torch.ones(2, 2, 2, dtype=torch.int32),
        torch.ones(2, 2, 2, dtype=torch.uint8),
        np.ones((2, 2, 2), dtype=np.int64),
    ],
    ids=["int64", "int32", "uint8", "numpy int64"],
)
def test_integer_joints_need_normalize(P, backend):
    with pytest.raises(TypeError, match=r"P holds integers \(torch\.u?int\d+\): pass normalize=True"):
        fastpid.pid(P, backend=backend)
    assert float(fastpid.pid(P, backend=backend, normalize=True).mi) == pytest.approx(0.0, abs=1e-12)


def test_counts_as_integers_suggest_a_fix(backend):
    with pytest.raises(TypeError, match=r"P / P.sum\(\)"):
        fastpid.pid(torch.ones(2, 2, 2, dtype=torch.int64), backend=backend)


# --------------------------------------------------------------------------
# Devices.


def test_joints_on_different_devices(backend):
    joints = [good(), torch.empty(GOOD.shape, dtype=torch.float64, device="meta")]
    with pytest.raises(ValueError, match=r"mixes devices: joint 0 is on cpu but joint 1 is on meta.*one device"):
        fastpid.pid(joints, backend=backend)


def test_joints_on_different_devices_names_the_first_odd_one(backend):
    joints = [good(), good(), torch.empty(GOOD.shape, dtype=torch.float64, device="meta"), good()]
    with pytest.raises(ValueError, match=r"joint 2 is on meta"):
        fastpid.pid(joints, backend=backend)


# --------------------------------------------------------------------------
# A batch with one bad joint names its index.


@pytest.mark.parametrize(
    "bad,match",
    [
        (-0.5, r"non-negative: joint \(1, 2\) holds negative mass"),
        (float("nan"), r"finite: joint \(1, 2\) holds NaN"),
        (5.0, r"sum to 1 over its last three axes: joint \(1, 2\) sums to"),
    ],
    ids=["negative", "nan", "sum"],
)
def test_batch_error_names_the_joint(bad, match, backend):
    P = good(batch=(2, 3))
    P[1, 2, 0, 1, 1] = bad
    with pytest.raises(ValueError, match=match):
        fastpid.pid(P, backend=backend)


def test_flat_batch_error_names_the_joint(backend):
    P = good(batch=(4,))
    P[3] *= 2
    with pytest.raises(ValueError, match=r"joint \(3,\) sums to 2"):
        fastpid.pid(P, backend=backend)


def test_zero_joint_in_batch_names_it(backend):
    P = good(batch=(3,))
    P[1] = 0
    with pytest.raises(ValueError, match=r"joint \(1,\) sums to 0"):
        fastpid.pid(P, backend=backend, normalize=True)


def test_single_joint_error_says_the_joint():
    P = good()
    P[0, 0, 0] = -1
    with pytest.raises(ValueError, match=r"the joint holds negative mass"):
        fastpid.pid(P)


# --------------------------------------------------------------------------
# Backends and input types.


@pytest.mark.parametrize("name", ["CPU", "", "numpy", "tritonn"])
def test_unknown_backend(name):
    known = re.escape(str(backends.names()))
    with pytest.raises(ValueError, match=rf"unknown backend {name!r}; expected 'auto' or one of {known}"):
        fastpid.pid(good(), backend=name)


@pytest.mark.skipif("cpu" in fastpid.available_backends(), reason="the 'cpu' extension is built")
def test_unbuilt_backend():
    with pytest.raises(ValueError, match=r"backend 'cpu' needs fastpid's C\+\+ extension, which this installation"):
        fastpid.pid(good(), backend="cpu")


@pytest.mark.parametrize(
    "value", ["P.npy", b"bytes", 3.0, None, {"P": 1}, []], ids=["str", "bytes", "float", "None", "dict", "empty list"]
)
def test_not_a_tensor(value, backend):
    with pytest.raises(TypeError, match=r"a numpy.ndarray, a sequence of them or nested lists of numbers.*got"):
        fastpid.pid(value, backend=backend)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"tol": float("nan")}, "tol must be"),
        ({"tol": -1.0}, "tol must be"),
        ({"max_iter": -1}, "max_iter must be"),
        ({"max_iter": 2.5}, "max_iter must be"),
    ],
)
def test_bad_solver_options(options, match):
    with pytest.raises(ValueError, match=match):
        fastpid.pid(np.full((2, 2, 2), 0.125), **options)


def test_meta_tensor_is_refused():
    with pytest.raises(ValueError, match="meta device"):
        fastpid.pid(torch.empty(2, 2, 2, dtype=torch.float64, device="meta"))


# --------------------------------------------------------------------------
# The helpers check as pid does; nested lists; backends this build lacks; CLI needs.


@pytest.mark.parametrize(
    "helper", [fastpid.mutual_information, fastpid.co_information], ids=["mutual_information", "co_information"]
)
def test_helpers_check_like_pid(helper):
    with pytest.raises(ValueError, match=r"sums to 2.*normalize=True"):
        helper(2 * good())
    with pytest.raises(ValueError, match="NaN or infinite"):
        helper(good() * float("nan"))
    with pytest.raises(ValueError, match="negative mass"):
        helper(good() - 0.1)
    doubled = helper(2 * good(), normalize=True)
    once = helper(good())
    if isinstance(once, dict):
        assert all(torch.allclose(doubled[key], once[key]) for key in once)
        assert all(isinstance(value, np.ndarray) for value in helper(GOOD).values())
    else:
        assert torch.allclose(doubled, once) and isinstance(helper(GOOD), np.ndarray)


def test_nested_lists_are_joints():
    """Nested lists of numbers read as float64 arrays; a list of them is a batch."""
    as_lists = GOOD.tolist()
    expected = fastpid.pid(torch.tensor(GOOD))
    single, batch = fastpid.pid(as_lists), fastpid.pid([as_lists, as_lists])
    assert batch.synergy.shape == (2,)
    for name in FIELDS:
        assert float(getattr(single, name)) == pytest.approx(float(getattr(expected, name)), abs=1e-12)
    counts = (np.rint(GOOD * 1000)).astype(int).tolist()
    assert float(fastpid.pid(counts, normalize=True).mi) == pytest.approx(float(expected.mi), abs=1e-2)
    with pytest.raises(TypeError, match="nested lists must hold numbers"):
        fastpid.pid([[[0.5, "a"]]])
    with pytest.raises(ValueError, match="sums to"):
        fastpid.pid(counts)


@pytest.mark.parametrize(
    "name,match",
    [("cuda", r"built with CUDA.*CUDA_HOME"), ("cpu", r"C\+\+ extension"), ("triton", "pip install triton")],
)
def test_backend_this_build_lacks(monkeypatch, name, match):
    """Every backend the README lists says what it needs where the installation lacks it."""
    if name == "triton":
        from fastpid import kernels

        monkeypatch.setattr(kernels, "HAS_TRITON", False)
        lacking = kernels.backend()
    else:
        lacking = backends.unavailable(name, backends.MISSING[name])
    monkeypatch.setattr(backends, "get", lambda _: lacking)
    with pytest.raises(ValueError, match=match):
        fastpid.pid(good(), backend=name)


def test_cli_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    from fastpid import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dit" else real(name, *a))
    assert cli.main(["verify", "--short"]) == 2
    assert capsys.readouterr().err.strip() == "fastpid verify needs dit: pip install dit"


@pytest.mark.parametrize("symbol", [200_000, 10**9])
def test_stray_large_symbol(symbol):
    """A symbol far beyond the data's size is refused with the alphabet it would create
    and the size to pass; passing that size builds the joint."""
    x1 = torch.randint(3, (2000,))
    x1[7] = symbol
    x2, y = torch.randint(3, (2000,)), torch.randint(3, (2000,))
    with pytest.raises(
        ValueError,
        match=rf"x1 holds symbol {symbol}: .* {symbol + 1:,} symbols for 2,000 samples"
        rf".*n1={symbol + 1}",
    ):
        fastpid.joint_from_samples(x1, x2, y)
    if symbol < 10**6:
        assert fastpid.joint_from_samples(x1, x2, y, n1=symbol + 1).shape == (symbol + 1, 3, 3)
    x1[7] = 1000  # within the free allowance: a sparse labelling is fine
    assert fastpid.joint_from_samples(x1, x2, y).shape == (1001, 3, 3)


# --------------------------------------------------------------------------
# Results a person reads.


def test_result_as_dict_table_and_frame():
    import json

    single = fastpid.pid(torch.tensor(CANONICAL["AND"]))
    plain = json.loads(json.dumps(single.to_dict()))
    assert plain["synergy"] == pytest.approx(0.5, abs=1e-7) and plain["converged"] is True and "q" not in plain
    text = str(single)
    assert "synergy" in text and "0.500000" in text and "converged" in text and "tensor(" not in text
    batch = fastpid.pid(good(batch=(3, 2)), return_q=True)
    assert np.asarray(batch.to_dict()["q"]).shape == (3, 2, *GOOD.shape)
    summary = str(batch)
    assert summary.startswith("PID of 6 joints, batch shape (3, 2)") and "6 converged" in summary
    assert [line.split()[0] for line in summary.splitlines()[2:]] == ["mean", "min", "max"]
    pandas = pytest.importorskip("pandas")
    frame = batch.to_dataframe()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 6 and frame["joint"].iloc[1] == (0, 1)
    np.testing.assert_allclose(frame["synergy"].to_numpy(), batch.synergy.reshape(-1).numpy())
    bootstrap = fastpid.bootstrap(
        torch.randint(2, (200,)), torch.randint(2, (200,)), torch.randint(2, (200,)), n_resamples=20, seed=0
    )
    plain = json.loads(json.dumps(bootstrap.to_dict()))
    assert set(plain["synergy"]) == {"estimate", "bias", "corrected", "se", "percentile", "basic"}
    assert len(plain["synergy"]["basic"]) == 2 and plain["unconverged"] == 0


def test_counts_and_half_precision():
    counts = np.rint(GOOD * 1000).astype(np.int64)
    reference = fastpid.pid(counts / counts.sum())
    for given in (counts, torch.from_numpy(counts), counts.astype(np.int32)):
        result = fastpid.pid(given, normalize=True)
        assert float(result.synergy) == pytest.approx(float(reference.synergy), abs=1e-9)
        with pytest.raises(TypeError, match=r"P holds integers .*normalize=True"):
            fastpid.pid(given)
    assert fastpid.mutual_information(torch.from_numpy(counts), normalize=True)["y;x1x2"].dtype == torch.float64
    for dtype in (torch.float16, torch.bfloat16):
        P = good().to(dtype).requires_grad_()
        result = fastpid.pid(P, normalize=True)
        assert result.synergy.dtype == dtype
        assert float(result.synergy.detach()) == pytest.approx(float(fastpid.pid(good()).synergy), abs=2e-2)
        result.synergy.backward()
        assert P.grad.dtype == dtype and torch.isfinite(P.grad.float()).all()
