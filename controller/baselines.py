r"""The methods compared, on one harness (``trainer.train``) and one record (``RunRecord``).

* "joint": joint training from scratch on CE(z, y).
* "fixed": both modalities unimodal for ``switch_epoch`` epochs, then joint on
  CE(z, y) + w Σ_m CE(z_m, y).
* "controller": ``TwoStageController`` (criterion "uniqueness", the paper's method),
  stage 2 on the same loss as "fixed".
* "controller-mi": the same with criterion "mi" (the paper's ablation).
* "controller-noise": the controller with ``rule="noise"``: its hand-over waits for
  a synergy drop larger than its bootstrap noise.
* "ogm-ge": joint training on CE(z, y) with OGM-GE gradient modulation, with
  SGD as its authors train it (``optimizer`` overrides).
* "mmpareto": joint training on CE(z, y) + Σ_m CE(z_m, y) with MMPareto's
  gradient integration (Wei & Hu, ICML 2024), SGD as its authors train it.

``run_method(name, data, seed, **config)`` builds the net (``mlp_net``) under
``seed`` and runs one method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import MultimodalNet, mlp_net
from .trainer import RunRecord, train
from .two_stage import Decision, Schedule, TwoStageController

# The learning rate of the methods their authors train with SGD (OGM-GE, MMPareto): their own
# 1e-3 and 2e-3 leave these MLPs underfitted after 40 epochs (docs/controller.md, "Baselines").
SGD_LR = 0.01


class FixedSchedule(Schedule):
    """Every modality unimodal for ``switch_epoch`` epochs, then joint; no probes
    (``switch_epoch = 0``: joint from the start)."""

    def __init__(self, n_modalities: int, switch_epoch: int):
        if not (isinstance(switch_epoch, int) and switch_epoch >= 0):
            raise ValueError(f"switch_epoch must be an int ≥ 0, got {switch_epoch!r}")
        self.switch_epoch = switch_epoch
        every = (True,) * n_modalities
        super().__init__(
            Decision(-1, "unimodal", every, f"fixed: unimodal for {switch_epoch} epochs")
            if switch_epoch
            else Decision(-1, "joint", every, "joint training from the start")
        )

    def epoch_end(self, epoch: int, features=None, labels=None, encoders=None) -> Decision:
        """Hand over at the end of epoch ``switch_epoch`` − 1."""
        if self.stage == "unimodal" and epoch + 1 >= self.switch_epoch:
            self._history.append(
                Decision(epoch, "joint", self.active, f"hand over: fixed switch after {self.switch_epoch} epochs")
            )
        return self.decision


class OGMGE:
    r"""On-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022),
    as a ``gradient_hook`` of joint training on CE(z, y).

    Per batch, from modality m's share of the fused logits, a_m = W_m f_m + b/M:

        s_m = Σ_i softmax(a_m,i)[y_i]
        ρ_m = s_m / mean_{k≠m} s_k              (M = 2: ρ_1 = s_1/s_2, the paper's ratio)
        k_m = 1 − tanh(α ρ_m) if ρ_m > 1, else 1     (paper Eq. 10; their code: α·relu(ρ))

    and, in epochs ``start ≤ epoch ≤ end``, every weight-matrix gradient g of encoder m
    becomes k_m g + ε with ε ~ N(0, (std(g) + 1e-8)²), std of the unmodulated g
    (GE; ``noise=False`` gives plain OGM).  As in the authors' code (GeWu-Lab/
    OGM-GE_CVPR2022, main.py): α = 0.1 and epochs 0–50 by default, the noise goes to
    both modalities, the fusion head and biases are left alone (they modulate conv
    kernels only; here the encoders' weight matrices, ndim ≥ 2).  The method is
    defined for two modalities; for M > 2 the reference is the mean of the others' scores.
    """

    def __init__(self, alpha: float = 0.1, modulation_epochs: tuple[int, int] = (0, 50), noise: bool = True):
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha!r}")
        self.alpha = alpha
        self.start, self.end = modulation_epochs
        self.noise = noise

    def coefficients(self, contributions: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """k_m for each modality from its logit share a_m (N, C) and the labels (N,)."""
        scores = torch.stack([a.detach().softmax(1).gather(1, labels[:, None]).sum() for a in contributions])
        others = (scores.sum() - scores) / (len(scores) - 1)
        ratios = scores / others
        return torch.where(ratios > 1, 1 - torch.tanh(self.alpha * ratios), torch.ones_like(ratios))

    def __call__(self, net: MultimodalNet, features: list[torch.Tensor], labels: torch.Tensor, epoch: int) -> None:
        if not self.start <= epoch <= self.end:
            return
        with torch.no_grad():
            coefficients = self.coefficients(net.fusion_contributions(features), labels)
            for encoder, k in zip(net.encoders, coefficients):
                for parameter in encoder.parameters():
                    if parameter.grad is None or parameter.dim() < 2:
                        continue
                    grad = parameter.grad
                    noise = torch.randn_like(grad) * (grad.std() + 1e-8) if self.noise else 0.0
                    parameter.grad = grad * k + noise


def joint(net, train_split, test_split, **config) -> RunRecord:
    """Joint training from scratch on CE(z, y)."""
    return train(FixedSchedule(net.n_modalities, 0), net, train_split, test_split, head_weight=0.0, **config)


def fixed(net, train_split, test_split, *, switch_epoch: int | None = None, **config) -> RunRecord:
    """Unimodal for ``switch_epoch`` epochs (default: a quarter of the epochs), then joint
    with w Σ CE(heads)."""
    switch_epoch = max(config["epochs"] // 4, 1) if switch_epoch is None else switch_epoch
    return train(FixedSchedule(net.n_modalities, switch_epoch), net, train_split, test_split, **config)


def controller(
    net,
    train_split,
    test_split,
    *,
    criterion: str = "uniqueness",
    probe_every: int = 5,
    ratio_threshold: float = 3.0,
    synergy_drop: float = 0.8,
    max_switches: int = 4,
    max_unimodal_epochs: int | None = None,
    n_components: int = 5,
    n_clusters: int = 20,
    rule: str = "paper",
    **config,
) -> RunRecord:
    """``TwoStageController`` decides stage 1; stage 1 lasts at most ``max_unimodal_epochs``
    (default: half the epochs)."""
    if max_unimodal_epochs is None:
        max_unimodal_epochs = max(config["epochs"] // 2, 1)
    schedule = TwoStageController(
        net.n_modalities,
        probe_every=probe_every,
        ratio_threshold=ratio_threshold,
        synergy_drop=synergy_drop,
        max_switches=max_switches,
        max_unimodal_epochs=max_unimodal_epochs,
        criterion=criterion,
        n_components=n_components,
        n_clusters=n_clusters,
        seed=config.get("seed", 0),
        rule=rule,
    )
    return train(schedule, net, train_split, test_split, **config)


def controller_noise(net, train_split, test_split, **config) -> RunRecord:
    """The controller whose hand-over waits for a synergy drop beyond its bootstrap noise."""
    return controller(net, train_split, test_split, rule="noise", **config)


def controller_mi(net, train_split, test_split, **config) -> RunRecord:
    """The controller with I(Y; X_m) ratios instead of unique information (ablation)."""
    return controller(net, train_split, test_split, criterion="mi", **config)


def ogm_ge(
    net,
    train_split,
    test_split,
    *,
    alpha: float = 0.1,
    modulation_epochs: tuple[int, int] = (0, 50),
    noise: bool = True,
    **config,
) -> RunRecord:
    """Joint training on CE(z, y) with OGM-GE, with SGD (momentum 0.9, weight decay 1e-4) as its
    authors train it (Adam would normalise the modulated gradients away), at lr ``SGD_LR``."""
    config = {"optimizer": "sgd", "lr": SGD_LR, **config}
    return train(
        FixedSchedule(net.n_modalities, 0),
        net,
        train_split,
        test_split,
        gradient_hook=OGMGE(alpha, modulation_epochs, noise),
        head_weight=0.0,
        **config,
    )


def min_norm_weight(a: torch.Tensor, b: torch.Tensor) -> float:
    """w in [0.001, 0.999] minimising ‖w a + (1 − w) b‖² (the two-gradient case of the
    min-norm problem, clipped inside the interval as multi-objective solvers do)."""
    ab, aa, bb = float(a @ b), float(a @ a), float(b @ b)
    if ab >= aa:
        return 0.999
    if ab >= bb:
        return 0.001
    return (bb - ab) / (aa + bb - 2 * ab)


class MMPareto:
    r"""MMPareto's gradient integration (Wei & Hu, "MMPareto: Boosting Multimodal
    Learning with Innocent Unimodal Assistance", ICML 2024), as a ``joint_backward``
    of the loss CE(z, y) + Σ_m CE(z_m, y).

    For encoder m, with g the gradient of the multimodal loss CE(z, y) and u that of
    its own unimodal loss CE(z_m, y) (the only other loss that reaches it): if
    cos(g, u) > 0 the two are combined with equal weights, else with the weights of
    the min-norm point of their convex hull (the Pareto direction, which no
    objective opposes); the combination 2 (w g + (1 − w) u), per parameter tensor,
    is scaled up to the norm of the plain sum g + u where it is shorter, then by
    ``gamma`` (1.5 in the authors' code).  Fusion and unimodal heads take their
    plain gradients.  The authors train with SGD (momentum 0.9, weight decay 1e-4,
    lr 0.002, batch 64); ``mmpareto`` uses that SGD at lr ``SGD_LR``.
    """

    def __init__(self, gamma: float = 1.5):
        self.gamma = gamma

    def __call__(self, net, fused, unimodal, labels) -> torch.Tensor:
        multimodal = F.cross_entropy(fused, labels)
        loss = multimodal + sum(F.cross_entropy(z, labels) for z in unimodal)
        groups = [list(encoder.parameters()) for encoder in net.encoders]
        shared = torch.autograd.grad(multimodal, [p for group in groups for p in group], retain_graph=True)
        loss.backward()
        start = 0
        for group in groups:
            g = shared[start : start + len(group)]
            start += len(group)
            u = [p.grad - gp for p, gp in zip(group, g)]
            flat_g, flat_u = torch.cat([x.flatten() for x in g]), torch.cat([x.flatten() for x in u])
            conflict = F.cosine_similarity(flat_g, flat_u, dim=0) <= 0
            w = min_norm_weight(flat_g, flat_u) if conflict else 0.5
            for p, gp, up in zip(group, g, u):
                combined = 2 * (w * gp + (1 - w) * up)
                scale = (p.grad.norm() / combined.norm().clamp_min(torch.finfo(combined.dtype).tiny)).clamp_min(1)
                p.grad = self.gamma * scale * combined
        return loss


def mmpareto(net, train_split, test_split, *, gamma: float = 1.5, **config) -> RunRecord:
    """Joint training from the start with MMPareto's gradient integration (``MMPareto``)."""
    config = {"optimizer": "sgd", "lr": SGD_LR, **config}
    return train(
        FixedSchedule(net.n_modalities, 0), net, train_split, test_split, joint_backward=MMPareto(gamma), **config
    )


METHODS = {
    "joint": joint,
    "fixed": fixed,
    "controller": controller,
    "controller-mi": controller_mi,
    "controller-noise": controller_noise,
    "ogm-ge": ogm_ge,
    "mmpareto": mmpareto,
}


def run_method(
    name: str, data, seed: int, *, hidden: int = 64, feature_dim: int = 32, epochs: int = 40, **config
) -> RunRecord:
    """Run method ``name`` (a key of ``METHODS``) on ``data`` (a ``data.TrainTest``: ``.train``
    and ``.test`` (views, labels) splits) with a net ``mlp_net(hidden, feature_dim)``
    initialised under ``seed``; ``config`` goes to the method and to ``trainer.train``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    views, labels = data.train
    n_classes = int(max(labels.max(), data.test[1].max())) + 1
    torch.manual_seed(seed)
    net = mlp_net([view.shape[1] for view in views], n_classes, hidden=hidden, feature_dim=feature_dim)
    return METHODS[name](net, data.train, data.test, epochs=epochs, seed=seed, method=name, **config)
