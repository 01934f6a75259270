r"""``fastpid.pid``: the BROJA partial information decomposition, certified and differentiable.

The atoms from V(P) (``fastpid.solver``) and the entropies of P, their
certificate and their closed-form (envelope) gradient: docs/pid-math.md, "The
atoms and their gradient".  At cells where P = 0 the gradient is taken within
the face of the simplex that P lies on.

The solve, its checks of the values of P and the certificate are one custom op,
``torch.ops.fastpid.broja`` (``torch.library``), with a fake implementation
(shapes only) and the closed-form backward registered with it, so that
``torch.compile(fullgraph=True)`` traces ``fastpid.pid`` and its gradient as
one graph: everything outside the op reads only shapes, dtypes and devices.
Outside ``torch.compile``, ``fastpid.pid`` calls the op's function directly, and
under eager autograd an ``autograd.Function`` with the same forward and backward
(the op's dispatch would import torch._dynamo on the first call: docs/performance.md).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, fields

import numpy as np
import torch

from . import backends, fallback
from ._checks import as_joint_tensor, check_layout, check_options
from .information import LN2

DEFAULT_TOL = 1e-8  # bits: fastpid.pid's tolerance on the duality gap


class ConvergenceWarning(UserWarning):
    """Some joints of a ``fastpid.pid`` call missed the tolerance: their ``gap`` (still a
    proven bound on the error of every atom) is above ``tol``."""


class ConvergenceError(RuntimeError):
    """Raised instead of ``ConvergenceWarning`` by ``fastpid.pid(..., strict=True)``."""


@dataclass
class PIDResult:
    """Atoms of the BROJA PID in bits, with their certificate; shapes are the batch shape.

    ``redundancy + unique1 + unique2 + synergy = mi`` (I(Y; X1, X2));
    ``gap`` bounds the error of every atom; ``q`` is the optimal Q (on request).
    Fields are tensors for tensor input and numpy arrays for numpy input."""

    redundancy: torch.Tensor
    unique1: torch.Tensor
    unique2: torch.Tensor
    synergy: torch.Tensor
    mi: torch.Tensor
    gap: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor
    q: torch.Tensor | None = None

    def numpy(self) -> PIDResult:
        """The same result with every field as a numpy array."""
        return PIDResult(**{f.name: _to_numpy(getattr(self, f.name)) for f in fields(self)})

    def to_dict(self) -> dict:
        """Every field as Python numbers (a float, bool or int for one joint; nested lists
        for a batch), ready for ``json.dumps``; ``q`` only if it was requested."""
        return {
            f.name: np.asarray(_to_numpy(getattr(self, f.name))).tolist()
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    def to_dataframe(self):
        """A pandas DataFrame with one row per joint (the batch flattened, its index in
        ``joint``) and the atoms, ``mi``, ``gap``, ``converged`` and ``iterations`` as columns."""
        try:
            import pandas
        except ImportError as error:
            raise ImportError("PIDResult.to_dataframe needs pandas: pip install pandas") from error
        columns = {name: np.asarray(_to_numpy(getattr(self, name))) for name in SUMMARY_FIELDS}
        shape = columns["gap"].shape
        frame = pandas.DataFrame({name: values.reshape(-1) for name, values in columns.items()})
        if shape:
            frame.insert(0, "joint", [index if len(shape) > 1 else index[0] for index in np.ndindex(shape)])
        return frame

    def __str__(self) -> str:
        """A table in bits: one row for one joint; for a batch, mean, min and max over its joints."""
        values = {name: np.asarray(_to_numpy(getattr(self, name)), dtype=np.float64) for name in ATOM_FIELDS}
        gap = np.asarray(_to_numpy(self.gap), dtype=np.float64)
        converged = np.asarray(_to_numpy(self.converged))
        header = "".join(f"{name:>12}" for name in ATOM_FIELDS)
        if gap.ndim == 0:
            row = "".join(f"{float(v):12.6f}" for v in values.values())
            return f"PID (bits){header}{'gap':>10}  converged\n{'':10}{row}{float(gap):10.1e}  {bool(converged)}"
        rows = [
            f"{label:<10}{''.join(f'{float(reduce(v)):12.6f}' for v in values.values())}"
            for label, reduce in (("mean", np.mean), ("min", np.min), ("max", np.max))
        ]
        return (
            f"PID of {gap.size:,} joints, batch shape {tuple(gap.shape)} (bits); {int(converged.sum()):,} "
            f"converged, worst gap {gap.max():.1e}\n{'':10}{header}\n" + "\n".join(rows)
        )


ATOM_FIELDS = ("redundancy", "unique1", "unique2", "synergy", "mi")
SUMMARY_FIELDS = (*ATOM_FIELDS, "gap", "converged", "iterations")


def _to_numpy(value):
    if value is None or isinstance(value, np.ndarray):
        return value
    return value.detach().cpu().numpy()


def _log_conditionals(p: torch.Tensor):
    """log P(y|x1,x2), log P(y|x1), log P(y|x2), log P(y) broadcast to (..., n1, n2, ny)."""

    def log_ratio(num, den):
        return torch.log(num) - torch.log(den)

    p1, p2 = p.sum(-2, keepdim=True), p.sum(-3, keepdim=True)
    return (
        log_ratio(p, p.sum(-1, keepdim=True)),
        log_ratio(p1, p1.sum(-1, keepdim=True)),
        log_ratio(p2, p2.sum(-1, keepdim=True)),
        torch.log(p.sum((-3, -2), keepdim=True)),
    )


@functools.cache
def _atoms_in_bits(device: torch.device) -> torch.Tensor:
    """The (5, 5) matrix taking [H(Y), H(Y|X1), H(Y|X2), H(Y|X1,X2), V] in nats to
    [R, U1, U2, S, MI] in bits (docs/pid-math.md, "The atoms and their gradient", / ln 2)."""
    #            R   U1  U2  S   MI
    weights = [
        [+1, 0, 0, 0, +1],  # H(Y)
        [-1, 0, +1, 0, 0],  # H(Y|X1)
        [-1, +1, 0, 0, 0],  # H(Y|X2)
        [0, 0, 0, -1, -1],  # H(Y|X1,X2)
        [-1, +1, +1, -1, 0],
    ]  # V
    return torch.tensor(weights, dtype=torch.float64, device=device) / LN2


def _forward(
    p: torch.Tensor, normalize: bool, backend: str, tol: float, max_iter: int, strict: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""BROJA PID of joints ``p`` of shape (..., n1, n2, ny), float32 or float64.

    Checks ``p`` (``check_joint``: errors name the first bad joint), rescales it
    to sum 1, solves in float64 with ``backend`` ("auto" or a name in
    ``backends.names()``, resolved for ``p``'s device) to a gap of ``tol`` nats in at most ``max_iter``
    iterations and certifies the solution; joints still above ``tol`` go to
    ``fastpid.fallback.refine``, and any left above it then raise
    ``ConvergenceError`` (``strict``) or give one ``ConvergenceWarning``.
    Returns, all float64 but the last two:

    atoms (..., 5) R, U1, U2, S, MI in bits; gap (...) in bits; q (..., n1, n2, ny);
    λ1 (..., n1, ny) and λ2 (..., n2, ny), the dual solution; iterations (...)
    int64; converged (...) bool."""
    # Resolved here, in the op, not by its callers: torch.compile cannot trace the
    # lookup of a plug-in backend (importlib.metadata).
    outputs = backends.get(backends.resolve(backend, p.device, tuple(p.shape))).forward(p, normalize, tol, max_iter)
    converged = outputs[-1]
    if not bool(converged if converged.dim() == 0 else converged.all()):  # one joint: no reduction
        outputs = _refine(p, outputs, tol, max_iter)
        converged, gap = outputs[-1], outputs[1]
        if not bool(converged.all()):
            report_unconverged(
                "fastpid.pid",
                int((~converged).sum()),
                converged.numel(),
                float(gap.max()) / LN2,
                tol / LN2,
                strict,
                stacklevel=3,
            )
    measures, gap, q, lam1, lam2, iterations, converged = outputs
    return measures @ _atoms_in_bits(p.device), gap / LN2, q, lam1, lam2, iterations, converged


def _refine(p, outputs, tol, max_iter):
    """``fallback.refine`` on the joints that missed ``tol``: its certified solution replaces
    the backend's where its gap is smaller (V, the gap, q, λ1, λ2); iterations add up."""
    converged = outputs[-1]
    batch_shape, (n1, n2, ny) = converged.shape, p.shape[-3:]
    measures, gap, q, lam1, lam2, iterations, converged = (
        out.reshape(-1, *out.shape[converged.dim() :]) for out in outputs
    )  # fresh tensors: written in place
    left = (~converged).nonzero()[:, 0]
    joints = p.reshape(-1, n1, n2, ny)[left].to(torch.float64)
    joints = joints / joints.sum((1, 2, 3), keepdim=True)  # check_joint has accepted them
    bounds, used = fallback.refine(joints, q[left], lam1[left], lam2[left], tol, max_iter)
    kept = bounds.gap < gap[left]
    better = left[kept]
    measures[better, 4] = bounds.value[kept]
    gap[better] = bounds.gap[kept]
    q[better], lam1[better], lam2[better] = bounds.q[kept], bounds.lam1[kept], bounds.lam2[kept]
    iterations[left] += used
    outputs = (measures, gap, q, lam1, lam2, iterations, gap <= tol)
    return tuple(out.reshape(batch_shape + out.shape[1:]) for out in outputs)


def report_unconverged(
    source: str, missed: int, total: int, worst_gap: float, tol: float, strict: bool, stacklevel: int = 2
):
    """One ``ConvergenceWarning`` (or, ``strict``, a ``ConvergenceError``) saying that ``missed``
    of ``total`` solves of ``source`` stayed above ``tol`` bits, the worst at ``worst_gap`` bits.
    ``stacklevel`` counts from the caller: 2 points the warning at the caller's caller."""
    message = (
        f"{source}: {missed} of {total} joints missed the tolerance {tol:.3g} bits (worst gap "
        f"{worst_gap:.3g} bits, a bound on the error of every atom of that joint); their `converged` is False"
    )
    if strict:
        raise ConvergenceError(message)
    warnings.warn(message, ConvergenceWarning, stacklevel=stacklevel + 1)


# The op ``fastpid::broja``: ``_forward`` with its fake implementation and its
# closed-form backward (``_backward``; only the atoms are differentiable, through
# the rescaling), for autograd and ``torch.compile``.
broja = torch.library.custom_op("fastpid::broja", _forward, mutates_args=())


@broja.register_fake
def _broja_fake(p, normalize, backend, tol, max_iter, strict=False):
    *batch, n1, n2, ny = p.shape
    real = dict(dtype=torch.float64, device=p.device)
    return (
        p.new_empty((*batch, 5), **real),
        p.new_empty(batch, **real),
        p.new_empty(p.shape, **real),
        p.new_empty((*batch, n1, ny), **real),
        p.new_empty((*batch, n2, ny), **real),
        p.new_empty(batch, dtype=torch.int64),
        p.new_empty(batch, dtype=torch.bool),
    )


def envelope_gradient(
    p: torch.Tensor, lam1: torch.Tensor, lam2: torch.Tensor, grad_atoms: torch.Tensor
) -> torch.Tensor:
    r"""∂(Σ_a grad_atoms_a · atom_a)/∂p in float64, the reference (torch) form.

    ``p`` (..., n1, n2, ny) is a joint of any positive scale T, ``lam1``
    (..., n1, ny) and ``lam2`` (..., n2, ny) its dual solution, ``grad_atoms``
    (..., 5) the upstream gradients of (R, U1, U2, S, MI).  By the envelope
    theorem ∂V/∂p(x1, x2, y) = λ1(x1, y) + λ2(x2, y); the entropy terms are
    differentiated directly; the result is 0 on cells with p = 0 before the
    rescaling, whose Jacobian makes it tangent to the simplex:
    (G − Σ G p / T) / T.  csrc/broja_backward.h fuses the same formula.
    """
    total = p.to(torch.float64).sum((-3, -2, -1), keepdim=True)
    p = p.to(torch.float64) / total
    dv = lam1[..., :, None, :] + lam2[..., None, :, :]  # ∂V/∂P
    log_x12, log_x1, log_x2, log_y = _log_conditionals(p)
    d_hy = -(log_y + 1)  # ∂H(Y)/∂P
    partials = (
        torch.stack(
            [
                d_hy + log_x1 + log_x2 - dv,  # R
                dv - log_x2,  # U1
                dv - log_x1,  # U2
                log_x12 - dv,  # S
                d_hy + log_x12,
            ],
            -4,
        )
        / LN2
    )  # MI
    grad = (grad_atoms[..., :, None, None, None] * partials).sum(-4)
    grad = torch.where(p > 0, grad, torch.zeros_like(grad))
    return (grad - (grad * p).sum((-3, -2, -1), keepdim=True)) / total


def _gradient(backend: str, device: torch.device):
    """``backend``'s fused backward for joints on ``device``, or ``envelope_gradient`` where it has none."""
    return backends.get(backends.resolve(backend, device)).gradient or envelope_gradient


def atom_jacobian(p: torch.Tensor, lam1: torch.Tensor, lam2: torch.Tensor, backend: str) -> torch.Tensor:
    """The gradients of all five atoms (R, U1, U2, S, MI) with respect to joints ``p``
    (..., n1, n2, ny) at their dual solution, shape (..., n1, n2, ny, 5): ``envelope_gradient``
    with one-hot upstream gradients, all five in one call of ``backend``'s fused backward
    (autograd would make one backward pass per atom)."""
    one_hot = torch.eye(5, dtype=torch.float64, device=p.device)
    batch = p.shape[:-3]
    grad = _gradient(backend, p.device)(
        p.unsqueeze(-4).expand(*batch, 5, *p.shape[-3:]),
        lam1.unsqueeze(-3).expand(*batch, 5, *lam1.shape[-2:]),
        lam2.unsqueeze(-3).expand(*batch, 5, *lam2.shape[-2:]),
        one_hot.expand(*batch, 5, 5),
    )
    return grad.movedim(-4, -1)


def _setup_context(ctx, inputs, output):
    atoms, gap, q, lam1, lam2, iterations, converged = output
    ctx.backend = inputs[2]
    ctx.save_for_backward(inputs[0], lam1, lam2)
    ctx.mark_non_differentiable(gap, q, lam1, lam2, iterations, converged)


def _backward(ctx, grad_atoms, *_):
    """Envelope gradient of the atoms with respect to the input joint: the
    backend's fused kernel (``Backend.gradient``) where it has one, else
    ``envelope_gradient``."""
    if torch.is_grad_enabled():  # backward(create_graph=True)
        raise NotImplementedError(
            "second derivatives of fastpid.pid are not implemented: its gradient holds the optimal dual "
            "variables, whose derivative with respect to P is not computed; use create_graph=False"
        )
    raw, lam1, lam2 = ctx.saved_tensors
    gradient = broja_gradient if torch.compiler.is_compiling() else _backend_gradient
    grad = gradient(raw, lam1, lam2, grad_atoms.to(torch.float64), ctx.backend)
    return grad.to(raw.dtype), None, None, None, None, None


def _backend_gradient(
    p: torch.Tensor, lam1: torch.Tensor, lam2: torch.Tensor, grad_atoms: torch.Tensor, backend: str
) -> torch.Tensor:
    return _gradient(backend, p.device)(p, lam1, lam2, grad_atoms)


# The backward as an op of its own where torch.compile traces it: a backend's fused
# backward may be a kernel launch (Triton) that fake tensors cannot run.
broja_gradient = torch.library.custom_op("fastpid::broja_gradient", _backend_gradient, mutates_args=())


@broja_gradient.register_fake
def _broja_gradient_fake(p, lam1, lam2, grad_atoms, backend):
    return torch.empty_like(p, dtype=torch.float64)


broja.register_autograd(_backward, setup_context=_setup_context)


class _EagerBroja(torch.autograd.Function):
    """The op's forward and backward for eager autograd.  Calling the op itself there would
    import torch._dynamo on the first call (torch.library's dispatch; docs/performance.md); the op stays
    for torch.compile, which has it loaded anyway."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _forward(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    backward = staticmethod(_backward)


def pid(
    P,
    *,
    backend: str = "auto",
    normalize: bool = False,
    return_q: bool = False,
    tol: float = DEFAULT_TOL,
    max_iter: int = 100,
    strict: bool = False,
) -> PIDResult:
    r"""BROJA partial information decomposition of joints P(x1, x2, y), in bits.

    Args:
        P: tensor or numpy array of shape (..., n1, n2, ny), float32 or float64
            (or a sequence of such joints on one device, or nested lists of
            numbers); leading axes are a batch.  Integer counts are taken with
            ``normalize=True``; float16/bfloat16 are computed in float32 and the
            results returned in the input's dtype.
        backend: ``"auto"`` (fastest for the device and joint size), ``"torch"`` (reference),
            ``"cpu"`` (C++ extension) or ``"cuda"`` (CUDA build of the extension).
        normalize: rescale joints that do not sum to 1; otherwise such joints are
            refused (joints within float rounding of 1 are rescaled either way).
        return_q: also return the optimal Q, shape (..., n1, n2, ny).
        tol: target duality gap in bits; ``converged`` says whether it was met.
        max_iter: interior-point iterations at most (for the backend's iteration; each
            certified fallback of the joints it leaves above ``tol`` may take
            ``fastpid.fallback.ITERATION_BUDGET`` times as many).
        strict: raise ``ConvergenceError`` if any joint misses ``tol``; by default
            such joints give one ``ConvergenceWarning`` per call (and ``converged``
            False; their ``gap`` still bounds their error).

    Returns:
        PIDResult with ``redundancy, unique1, unique2, synergy, mi, gap`` in the
        input's dtype, ``converged`` and ``iterations``.  The solve runs in
        float64 whatever the input dtype.  Numpy in, numpy out.  Every atom is
        differentiable with respect to P (closed-form envelope gradient).
    """
    check_options(tol, max_iter)
    tensor, from_numpy = as_joint_tensor(P, normalize)
    check_layout(tensor)
    # The op where torch.compile traces; its autograd function where autograd alone needs it; else the
    # forward itself (the op's dispatch has a cost of its own: docs/performance.md).
    if torch.compiler.is_compiling():
        forward = broja
    elif tensor.requires_grad and torch.is_grad_enabled():
        forward = _EagerBroja.apply
    else:
        forward = _forward
    outputs = forward(tensor, normalize, backend, tol * LN2, max_iter, strict)
    dtype = P.dtype if isinstance(P, torch.Tensor) and P.dtype in (torch.float16, torch.bfloat16) else tensor.dtype
    result = _result(outputs, dtype, return_q)
    return result.numpy() if from_numpy else result


def _result(outputs: tuple[torch.Tensor, ...], dtype: torch.dtype, return_q: bool) -> PIDResult:
    """The PIDResult of ``_forward``'s outputs, atoms and gap in ``dtype``."""
    atoms, gap, q, _, _, iterations, converged = outputs
    redundancy, unique1, unique2, synergy, mi = atoms.to(dtype).unbind(-1)
    return PIDResult(
        redundancy=redundancy,
        unique1=unique1,
        unique2=unique2,
        synergy=synergy,
        mi=mi,
        gap=gap.to(dtype),
        converged=converged,
        iterations=iterations,
        q=q.to(dtype) if return_q else None,
    )


def pid_with_jacobian(
    P: torch.Tensor, *, backend: str = "auto", tol: float = DEFAULT_TOL, max_iter: int = 100
) -> tuple[PIDResult, torch.Tensor]:
    """``pid`` of float64 joints P (..., n1, n2, ny) summing to 1, and the gradients of its five
    atoms (R, U1, U2, S, MI) with respect to P, (..., n1, n2, ny, 5) (``atom_jacobian``): what
    a delta method needs, without autograd's one backward pass per atom."""
    check_options(tol, max_iter)
    tensor, _ = as_joint_tensor(P, False)
    check_layout(tensor)
    outputs = _forward(tensor, False, backend, tol * LN2, max_iter)
    _, _, _, lam1, lam2, _, _ = outputs
    return _result(outputs, tensor.dtype, False), atom_jacobian(tensor, lam1, lam2, backend)
