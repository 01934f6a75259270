r"""Two-stage training: shape each modality's initial state alone, then train them jointly.

Tang et al. 2025 (arXiv 2509.20840, "Shaping Initial State Prevents Modality
Competition in Multi-modal Fusion"), for M ≥ 2 modalities.  Stage 1 trains each
modality's encoder with its own head; every ``probe_every`` epochs the
representations of a fixed probe set are discretised (L2-normalise, PCA, k-means)
and the BROJA PID of every pair of modalities about the label is measured.  The
uniqueness ratios decide which modalities pause; the synergy locates the "ideal
initial state" from which stage 2, joint training, starts.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.distributed as dist

import fastpid

ATOMS = ("redundancy", "unique1", "unique2", "synergy")
CRITERIA = ("uniqueness", "mi")
# Scores (bits) are floored here before a ratio is taken: values within the
# solver's accuracy of zero (certified gaps are ~1e-8 bits) carry no ratio.
SCORE_FLOOR = 1e-6

PairValues = dict[tuple[int, int], dict[str, float]]


@dataclass(frozen=True)
class Decision:
    """What trains next, decided at the end of ``epoch`` (0-based; -1: before training).

    ``stage``: "unimodal" (each active encoder with its own head) or "joint";
    ``active[i]``: whether modality i trains; ``reason``: the rule that fired, with
    its numbers; ``pid``: the per-pair PID values (bits) behind it, None when no
    probe was taken; ``restored_epoch``: the synergy peak whose encoder weights
    were loaded back at the hand-over, None otherwise."""

    epoch: int
    stage: Literal["unimodal", "joint"]
    active: tuple[bool, ...]
    reason: str
    pid: PairValues | None = None
    restored_epoch: int | None = None


@functools.cache
def _bias_worker() -> ThreadPoolExecutor:
    """The one thread that solves every controller's bias resamples (a pool per
    controller would leave a thread behind each)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastpid-bias")


# A forked child has the pool but not its thread: work sent there would never run.
os.register_at_fork(after_in_child=_bias_worker.cache_clear)


def _add_per_pair(values: PairValues, table: torch.Tensor, suffix: str) -> None:
    """Each pair's row of ``table`` (pairs, 5: the atoms and mi) into its values, as
    "<atom><suffix>" (one host copy for the whole table)."""
    for atoms, row in zip(values.values(), table.tolist()):
        atoms.update({name + suffix: value for name, value in zip((*ATOMS, "mi"), row)})


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_rows(rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows (n_rank, d), concatenated in rank order (shards may
    differ in size), and where this process's rows start among them."""
    if not _is_distributed():
        return rows, 0
    size_tensors = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(dist.get_world_size())]
    dist.all_gather(size_tensors, torch.tensor([len(rows)], device=rows.device))
    sizes = [int(size) for size in size_tensors]
    padded = rows.new_zeros(max(sizes), rows.shape[1])
    padded[: len(rows)] = rows
    blocks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(blocks, padded)
    return torch.cat([block[:size] for block, size in zip(blocks, sizes)]), sum(sizes[: dist.get_rank()])


def _copy_state(module: torch.nn.Module) -> dict:
    """A copy of ``module.state_dict()``: tensors cloned, anything else deep-copied (a
    deep copy of the whole dict takes ~6× longer on the demo's encoders)."""
    return {
        name: value.detach().clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)
        for name, value in module.state_dict().items()
    }


class Schedule:
    """What trains next, as the last of a history of decisions (the start before any):
    the interface ``trainer.train`` drives (``stage``, ``active``, ``due``,
    ``epoch_end``, ``history``)."""

    def __init__(self, start: Decision):
        self._start = start
        self._history: list[Decision] = []

    @property
    def decision(self) -> Decision:
        """The decision in force: the last one taken, or the start."""
        return self._history[-1] if self._history else self._start

    @property
    def stage(self) -> str:
        """The stage in force: "unimodal" or "joint"."""
        return self.decision.stage

    @property
    def active(self) -> tuple[bool, ...]:
        """Whether each modality trains now."""
        return self.decision.active

    @property
    def history(self) -> list[Decision]:
        """Every decision taken, in order."""
        return list(self._history)

    def due(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` takes a probe (the features are then passed to ``epoch_end``)."""
        return False

    def epoch_end(self, epoch: int, features=None, labels=None, encoders=None) -> Decision:
        """Decide at the end of ``epoch`` and return the decision in force."""
        raise NotImplementedError


class TwoStageController(Schedule):
    r"""Decides, from PID measurements, which modality encoders train and when to fuse.

    Rules at each probe (PID values in bits, modalities numbered 0 … M−1):

    * Score of modality i against j, from the PID of the pair (i, j):
      ``criterion="uniqueness"`` (the paper's method): the unique information
      U_i; ``criterion="mi"`` (the paper's ablation): I(Y; X_i) = R + U_i.
      Scores are floored at 1e-6 bits before taking ratios.
    * Balance: every modality starts active; going through the ratios
      score_i/score_j from the largest down, modality i pauses when its ratio
      exceeds ``ratio_threshold`` and both i and j are still active.  Every pause
      leaves its weaker partner training, so at least one modality trains.  For
      M = 2: U1/U2 > 3 pauses modality 1, U2/U1 > 3 pauses modality 2, otherwise
      both train.  The active set is decided afresh at every probe.
    * Switch: a probe that changes the active set.  At most ``max_switches`` are
      made; the probe that would make one more hands over instead.
    * Synergy: the mean over pairs of S.  At a new maximum (the peak) the encoders'
      state_dicts are deep-copied (one spare copy of the encoders); when S < ``synergy_drop`` × peak (peak > 0) the
      controller hands over (``rule="paper"``).  With ``rule="noise"`` every probe's
      atoms also get a standard error (delta method) and a bias (bootstrap with
      the linear term as control variate, ``noise_resamples`` resamples), from
      ``fastpid.plugin_noise``, which also makes the probe's own solve (the bias
      resamples, which no rule reads, are solved on a background thread unless
      ``bias_in_background=False``), and the drop must also exceed its noise:
      peak − S > ``noise_z`` × √(se_peak² + se_S²), the standard error of the mean
      synergy being √(Σ_pairs se²) / pairs.  Synergy
      values of a few hundredths of a bit change by about their own noise from
      probe to probe; the paper's rule then hands over on noise.  It also hands over once ``max_unimodal_epochs``
      epochs have been trained (checked at every epoch's end).
    * Hand-over: stage "joint" with every modality active, the encoders loaded
      back with the weights of the synergy peak ("ideal initial state") when they
      are passed.  Order at a probe: peak, drop, budget, then balance.

    A probe is due at the end of epoch e (0-based) when (e + 1) % probe_every == 0.
    Every decision is logged in ``history`` with its reason and PID values.  With
    ``torch.distributed`` initialised, each process passes its shard of the probe
    set (at least one sample each) and every process takes the same decision as
    one process on the shards concatenated in rank order.

    Glue for a training loop::

        controller = TwoStageController(n_modalities=2)
        for epoch in range(n_epochs):
            train_one_epoch(controller.stage, controller.active)  # unimodal: encoder i and its head iff active[i]
            features = None
            if controller.due(epoch):
                with torch.no_grad():
                    features = [encoder(x) for encoder, x in zip(encoders, probe_inputs)]
            controller.epoch_end(epoch, features, probe_labels, encoders)

    ``state_dict()`` goes into the checkpoint; ``load_state_dict`` resumes in the
    same stage with the same history.
    """

    def __init__(
        self,
        n_modalities: int = 2,
        *,
        probe_every: int = 5,
        ratio_threshold: float = 3.0,
        synergy_drop: float = 0.8,
        max_switches: int = 4,
        max_unimodal_epochs: int | None = None,
        criterion: Literal["uniqueness", "mi"] = "uniqueness",
        n_components: int = 5,
        n_clusters: int = 20,
        seed: int = 0,
        warm_start: bool = True,
        backend: str = "auto",
        tol: float = 1e-6,
        rule: Literal["paper", "noise"] = "paper",
        noise_resamples: int = 4,
        noise_z: float = 2.0,
        bias_in_background: bool = True,
    ):
        """
        Args:
            n_modalities: M ≥ 2 encoders.
            probe_every: epochs between probes.
            ratio_threshold: score ratio above which the stronger modality pauses (> 1).
            synergy_drop: hand over when synergy < synergy_drop × its peak (in (0, 1)).
            max_switches: most changes of the active set before the hand-over.
            max_unimodal_epochs: epochs of stage 1 at most (None: no limit).
            criterion: "uniqueness" (U_i/U_j) or "mi" (I(Y;X_i)/I(Y;X_j)).
            n_components, n_clusters, seed: the discretiser (PCA size, k-means
                clusters, random state) of each modality's representation.
            warm_start: each probe's k-means starts from the previous probe's
                centroids (``fastpid.Discretizer(warm_start=True)``): no k-means++
                seeding, fewer Lloyd iterations, symbols that keep their meaning.
            backend: ``fastpid.pid`` backend.
            tol: duality gap (bits) each probe's PID is solved to; decisions compare
                ratios of atoms, so 1e-6 bits (two fewer iterations than pid's 1e-8)
                is ample; the gap is logged with every decision.
            rule: "paper" (hand over on a synergy drop below ``synergy_drop`` × peak)
                or "noise" (that drop, and more than ``noise_z`` standard errors).
            noise_resamples: resamples per probe behind the bias under ``rule="noise"``
                (≥ 2; the standard error needs none: ``fastpid.plugin_noise``).
            noise_z: how many standard errors a drop must exceed under ``rule="noise"``.
            bias_in_background: under ``rule="noise"``, solve each probe's bias resamples
                on a background thread (the solve releases the GIL), so that the probe
                returns once the decisive synergy and standard errors are known.  A
                probe's ``*_bias`` values join its PID values when ``history`` or
                ``state_dict()`` is read, or at the next probe, whichever comes first;
                ``bias_seconds`` adds up the time their solves took.  False: solved
                within the probe.
        """
        if not (isinstance(n_modalities, int) and n_modalities >= 2):
            raise ValueError(f"n_modalities must be an int ≥ 2, got {n_modalities!r}")
        if not (isinstance(probe_every, int) and probe_every >= 1):
            raise ValueError(f"probe_every must be a positive int, got {probe_every!r}")
        if not ratio_threshold > 1:
            raise ValueError(f"ratio_threshold must exceed 1, got {ratio_threshold!r}")
        if not 0 < synergy_drop < 1:
            raise ValueError(f"synergy_drop must lie in (0, 1), got {synergy_drop!r}")
        if not (isinstance(max_switches, int) and max_switches >= 0):
            raise ValueError(f"max_switches must be an int ≥ 0, got {max_switches!r}")
        if max_unimodal_epochs is not None and not (isinstance(max_unimodal_epochs, int) and max_unimodal_epochs >= 1):
            raise ValueError(f"max_unimodal_epochs must be a positive int or None, got {max_unimodal_epochs!r}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        if rule not in ("paper", "noise"):
            raise ValueError(f"rule must be 'paper' or 'noise', got {rule!r}")
        if not (isinstance(noise_resamples, int) and noise_resamples >= 2):
            raise ValueError(f"noise_resamples must be an int ≥ 2, got {noise_resamples!r}")
        if not noise_z > 0:
            raise ValueError(f"noise_z must be positive, got {noise_z!r}")
        self.rule, self.noise_resamples, self.noise_z, self.seed = rule, noise_resamples, noise_z, seed
        self.bias_in_background = bool(bias_in_background)
        self.n_modalities = n_modalities
        self.probe_every = probe_every
        self.ratio_threshold = ratio_threshold
        self.synergy_drop = synergy_drop
        self.max_switches = max_switches
        self.max_unimodal_epochs = max_unimodal_epochs
        self.criterion = criterion
        self.n_clusters = n_clusters
        self.backend = backend
        self.tol = tol
        self._discretizers = [  # refitted at every probe
            fastpid.Discretizer(n_components, n_clusters, random_state=seed, warm_start=warm_start)
            for _ in range(n_modalities)
        ]
        self.pairs = tuple(itertools.combinations(range(n_modalities), 2))
        self.monitor_seconds = 0.0  # time spent in measure()
        self.discretize_seconds = 0.0  # the part of it spent fitting the discretisers
        self.bias_seconds = 0.0  # the bias resamples' solves (rule="noise"), wherever they ran
        self._pending_bias: list[tuple[PairValues, fastpid.PlugInNoise]] = []  # probes awaiting their bias
        super().__init__(
            Decision(-1, "unimodal", (True,) * n_modalities, "start: every modality trains with its own head")
        )
        self._switches = 0
        self._peak_synergy: float | None = None
        self._peak_synergy_se = 0.0
        self._peak_epoch: int | None = None
        self._peak_weights: list[dict] | None = None

    def due(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` takes a probe (only in stage 1)."""
        return self.stage == "unimodal" and (epoch + 1) % self.probe_every == 0

    def measure(self, features: Sequence[torch.Tensor], labels: torch.Tensor) -> PairValues:
        r"""PID of every pair of modalities' representations about the label, in bits.

        Each representation (N, d_i) is discretised by a ``fastpid.Discretizer``
        (L2-normalise, PCA to ``n_components``, k-means to ``n_clusters``) fitted on
        the whole probe set, whose rows take k-means' labels; the plug-in joints of
        all pairs are solved in one batched ``fastpid.pid`` call.  Under ``torch.distributed`` each process
        passes its shard: the shards are gathered (in rank order) to fit the same
        discretisers everywhere, and the local counts are summed with
        ``fastpid.all_reduce_joint``, so the joint is that of all samples, exactly.

        Returns:
            ``{(i, j): {"redundancy", "unique1", "unique2", "synergy", "mi", "gap", "converged"}}``
            for i < j, unique1 being modality i's; a pair whose solve missed the
            tolerance (``converged`` False, and ``fastpid.pid`` warned) is named in
            the reason of the decision taken on it.
        """
        started = time.perf_counter()
        self._settle_bias()
        features, labels = self._check_probe(features, labels)
        rows, start = _gather_rows(torch.cat(features, 1))
        views = rows.split([block.shape[1] for block in features], 1)
        mine = slice(start, start + len(labels))
        fitting = time.perf_counter()
        symbols = [
            discretizer.fit_transform(view)[mine].to(labels.device)
            for discretizer, view in zip(self._discretizers, views)
        ]
        self.discretize_seconds += time.perf_counter() - fitting
        n_labels = fastpid.all_reduce_label_count(labels)
        sizes = (self.n_clusters, self.n_clusters, n_labels)
        if self.rule == "noise":
            if _is_distributed():
                raise NotImplementedError("rule='noise' needs the whole probe set in one process")
            noise = fastpid.plugin_noise(
                *self._pair_samples(symbols, labels),
                *sizes,
                n_resamples=self.noise_resamples,
                seed=self.seed + len(self.history),
                backend=self.backend,
                tol=self.tol,
                executor=_bias_worker() if self.bias_in_background else None,
            )
            result = noise.result
        else:
            counts = fastpid.joint_from_samples(*self._pair_samples(symbols, labels), *sizes, normalize=False)
            result = fastpid.pid(fastpid.all_reduce_joint(counts), backend=self.backend, tol=self.tol)
        # One host copy per quantity (.tolist()), not one per pair and quantity.
        columns = {name: getattr(result, name).tolist() for name in (*ATOMS, "mi", "gap", "converged")}
        values = {pair: {name: column[k] for name, column in columns.items()} for k, pair in enumerate(self.pairs)}
        if self.rule == "noise":
            _add_per_pair(values, noise.se, "_se")
            self._pending_bias.append((values, noise))
            if not self.bias_in_background:
                self._settle_bias()
        self.monitor_seconds += time.perf_counter() - started
        return values

    def _settle_bias(self) -> None:
        """Write the bias of every probe still awaiting it into its PID values (waits for
        the background solves)."""
        for values, noise in self._pending_bias:
            _add_per_pair(values, noise.bias, "_bias")
            self.bias_seconds += noise.bias_seconds
        self._pending_bias.clear()

    @property
    def history(self) -> list[Decision]:
        """Every decision taken, in order (with the bias of every probe: waits for it)."""
        self._settle_bias()
        return super().history

    def __getstate__(self) -> dict:
        """For pickle and copy.deepcopy: the state once every pending bias is in (a
        pending solve cannot be copied)."""
        self._settle_bias()
        return self.__dict__

    def _pair_samples(self, symbols, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x1, x2, y) of every pair of modalities, stacked: one sample set per pair."""
        first, second = zip(*self.pairs)
        return (
            torch.stack([symbols[i] for i in first]),
            torch.stack([symbols[j] for j in second]),
            labels.expand(len(self.pairs), -1),
        )

    def step(self, epoch: int, values: PairValues, encoders: Sequence[torch.nn.Module] | None = None) -> Decision:
        """Take the decision of a probe at the end of ``epoch`` from per-pair PID
        values (the rules in the class docstring); copy the encoders' weights at a
        new synergy peak and load them back at the hand-over."""
        if self.stage == "joint":
            raise RuntimeError(
                f"the controller handed over to joint training at epoch {self.decision.epoch}; "
                "step() decides only in the unimodal stage"
            )
        self._check_values(values)
        self._check_encoders(encoders)
        synergy = sum(values[pair]["synergy"] for pair in self.pairs) / len(self.pairs)
        synergy_se = sum(values[pair].get("synergy_se", 0.0) ** 2 for pair in self.pairs) ** 0.5 / len(self.pairs)
        if self._peak_synergy is None or synergy > self._peak_synergy:
            self._peak_synergy, self._peak_epoch, self._peak_synergy_se = synergy, epoch, synergy_se
            self._peak_weights = None if encoders is None else [_copy_state(e) for e in encoders]
        trend = f"mean synergy {synergy:.4g} bits (peak {self._peak_synergy:.4g} at epoch {self._peak_epoch})"
        uncertain = [
            f"{pair} (gap {values[pair]['gap']:.2g} bits)"
            for pair in self.pairs
            if not values[pair].get("converged", True)
        ]
        if uncertain:
            trend += f"; unconverged PID of {', '.join(uncertain)}"
        if self._peak_synergy > 0 and synergy < self.synergy_drop * self._peak_synergy:
            noise = self.noise_z * (self._peak_synergy_se**2 + synergy_se**2) ** 0.5
            if self.rule == "paper":
                return self._hand_over(epoch, f"{trend} fell below {self.synergy_drop:g} × peak", values, encoders)
            if self._peak_synergy - synergy > noise:
                return self._hand_over(
                    epoch,
                    f"{trend} fell below {self.synergy_drop:g} × peak, by more than {self.noise_z:g} "
                    f"standard errors ({noise:.3g} bits)",
                    values,
                    encoders,
                )
            trend += f"; its drop is within {self.noise_z:g} standard errors ({noise:.3g} bits): noise"
        if self._budget_spent(epoch):
            return self._hand_over(epoch, f"{trend}; {self._budget_reason()}", values, encoders)
        active, balance = self._balance(values)
        if active != self.active:
            if self._switches == self.max_switches:
                return self._hand_over(
                    epoch,
                    f"{balance} would be switch {self._switches + 1} > max_switches={self.max_switches}; {trend}",
                    values,
                    encoders,
                )
            self._switches += 1
        return self._log(Decision(epoch, "unimodal", active, f"{balance}; {trend}", values))

    def epoch_end(
        self,
        epoch: int,
        features: Sequence[torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        encoders: Sequence[torch.nn.Module] | None = None,
    ) -> Decision:
        """Call after every training epoch: probes when due (``features``, one
        (N, d_i) tensor per modality on the probe set, and ``labels`` required
        then), checks the epoch budget, and returns the decision in force."""
        if self.due(epoch):
            if features is None or labels is None:
                raise ValueError(f"a probe is due at the end of epoch {epoch}: pass features and labels")
            return self.step(epoch, self.measure(features, labels), encoders)
        if self.stage == "unimodal" and self._budget_spent(epoch):
            self._check_encoders(encoders)
            return self._hand_over(epoch, self._budget_reason(), None, encoders)
        return self.decision

    def state_dict(self) -> dict:
        """Everything needed to resume: switches, the synergy peak (value, epoch,
        encoder weights), the last probe's discretisers (the next one starts
        from them), time spent measuring and the history, whose last
        decision holds the stage and the active set.  Plain containers and
        tensors (``torch.load(weights_only=True)`` reads it)."""
        self._settle_bias()
        return {
            "n_modalities": self.n_modalities,
            "switches": self._switches,
            "peak_synergy": self._peak_synergy,
            "peak_synergy_se": self._peak_synergy_se,
            "peak_epoch": self._peak_epoch,
            "peak_weights": self._peak_weights,
            "monitor_seconds": self.monitor_seconds,
            "discretize_seconds": self.discretize_seconds,
            "bias_seconds": self.bias_seconds,
            "discretizers": [discretizer.state_dict() for discretizer in self._discretizers],
            "history": [asdict(decision) for decision in self._history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``: same stage, active set, peak and history."""
        if state["n_modalities"] != self.n_modalities:
            raise ValueError(
                f"the state is of a controller of {state['n_modalities']} modalities, this one has {self.n_modalities}"
            )
        self._switches = state["switches"]
        self._peak_synergy, self._peak_epoch = state["peak_synergy"], state["peak_epoch"]
        self._peak_synergy_se = state.get("peak_synergy_se", 0.0)
        self._peak_weights = state["peak_weights"]
        self.monitor_seconds, self.discretize_seconds = state["monitor_seconds"], state["discretize_seconds"]
        self.bias_seconds = state.get("bias_seconds", 0.0)
        self._pending_bias.clear()
        for discretizer, fitted in zip(self._discretizers, state["discretizers"]):
            discretizer.load_state_dict(fitted)
        self._history = [Decision(**{**entry, "active": tuple(entry["active"])}) for entry in state["history"]]

    def _balance(self, values: PairValues) -> tuple[tuple[bool, ...], str]:
        """The active set from the score ratios (largest first) and its reason."""
        name = "U{}".format if self.criterion == "uniqueness" else "I(Y;X{})".format
        ratios = []
        for i, j in self.pairs:
            score_i, score_j = (max(self._score(values[(i, j)], atom), SCORE_FLOOR) for atom in ("unique1", "unique2"))
            ratios += [(score_i / score_j, i, j), (score_j / score_i, j, i)]
        ratios.sort(key=lambda entry: -entry[0])  # stable: ties keep the pair order
        active = [True] * self.n_modalities
        pauses = []
        for ratio, strong, weak in ratios:
            if ratio > self.ratio_threshold and active[strong] and active[weak]:
                active[strong] = False
                pauses.append(f"pause {strong}: {name(strong)}/{name(weak)} = {ratio:.3g} > {self.ratio_threshold:g}")
        if not pauses:
            ratio, strong, weak = ratios[0]
            pauses.append(f"balanced: largest {name(strong)}/{name(weak)} = {ratio:.3g} ≤ {self.ratio_threshold:g}")
        return tuple(active), ", ".join(pauses)

    def _score(self, pair_values: dict[str, float], unique: str) -> float:
        """One modality's score in a pair: U_i, or I(Y;X_i) = R + U_i."""
        if self.criterion == "uniqueness":
            return pair_values[unique]
        return pair_values["redundancy"] + pair_values[unique]

    def _hand_over(
        self, epoch: int, reason: str, values: PairValues | None, encoders: Sequence[torch.nn.Module] | None
    ) -> Decision:
        """Switch to joint training, loading the peak's weights into the encoders when given."""
        restored = None
        if encoders is not None and self._peak_epoch is not None:
            if self._peak_weights is None:
                raise ValueError(
                    f"no encoder weights were saved at the synergy peak (epoch {self._peak_epoch}): "
                    "pass encoders at every probe to have them restored"
                )
            for encoder, weights in zip(encoders, self._peak_weights):
                encoder.load_state_dict(weights)
            restored = self._peak_epoch
            reason += f"; restored the encoders of epoch {restored}"
        return self._log(
            Decision(epoch, "joint", (True,) * self.n_modalities, f"hand over: {reason}", values, restored)
        )

    def _budget_spent(self, epoch: int) -> bool:
        return self.max_unimodal_epochs is not None and epoch + 1 >= self.max_unimodal_epochs

    def _budget_reason(self) -> str:
        return f"the unimodal budget of {self.max_unimodal_epochs} epochs is spent"

    def _log(self, decision: Decision) -> Decision:
        self._history.append(decision)
        return decision

    def _check_values(self, values: PairValues) -> None:
        """Every pair (i < j) present, with every atom."""
        if not isinstance(values, dict) or set(values) != set(self.pairs):
            keys = sorted(values) if isinstance(values, dict) else type(values).__name__
            raise ValueError(f"values must be a dict with one entry per pair {list(self.pairs)}, got {keys}")
        for pair in self.pairs:
            missing = [atom for atom in ATOMS if atom not in values[pair]]
            if missing:
                raise ValueError(f"values[{pair}] lacks {missing}; each pair needs {list(ATOMS)} (bits)")

    def _check_encoders(self, encoders: Sequence[torch.nn.Module] | None) -> None:
        if encoders is not None and len(encoders) != self.n_modalities:
            raise ValueError(f"encoders must hold one module per modality ({self.n_modalities}), got {len(encoders)}")

    def _check_probe(
        self, features: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Detached features, one (N, d_i) tensor per modality, and integer labels (N,)."""
        if len(features) != self.n_modalities:
            raise ValueError(f"features must hold one tensor per modality ({self.n_modalities}), got {len(features)}")
        if not (isinstance(labels, torch.Tensor) and labels.dim() == 1 and not labels.is_floating_point()):
            raise ValueError("labels must be a 1-D integer tensor (N,) of class indices")
        for i, block in enumerate(features):
            if not (isinstance(block, torch.Tensor) and block.dim() == 2 and len(block) == len(labels)):
                shape = tuple(block.shape) if isinstance(block, torch.Tensor) else type(block).__name__
                raise ValueError(f"features[{i}] must be a tensor (N, d) with N = {len(labels)} labels, got {shape}")
            if block.device != labels.device:
                raise ValueError(
                    f"features[{i}] is on {block.device} but labels are on {labels.device}; "
                    "pass the probe's features and labels on one device"
                )
        return [block.detach() for block in features], labels
