r"""The main job (``fastpid demo``): after ``fastpid verify`` (fastpid against dit), the
PID of two real views and the two-stage controller against its baselines.

2. The PID of two views of the UCI multiple-features digits about the digit: each
   view discretised as the paper does (L2-normalise, PCA to 5, k-means to 20), the
   plug-in joint of all 2000 samples, and bootstrap intervals with the bias of the
   plug-in estimator.
3. Every method of ``baselines.METHODS`` on each data set over several seeds: the
   fused test accuracy, each modality's linear-probe accuracy, wall time, and the
   share of stage 1 spent on PID monitoring.

``run_demo(out)`` prints the tables and writes ``results.json`` (every number and
the controllers' schedules) and ``pid_over_epochs.png`` (the controller's PID atoms
over epochs, stages marked) to ``out``.
"""

from __future__ import annotations

import datetime
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

import fastpid

from .baselines import METHODS, run_method
from .data import TrainTest, load_uci_multifeature, standardize, stratified_split, synthetic_competition
from .trainer import RunRecord

ATOMS = ("redundancy", "unique1", "unique2", "synergy")
UCI_VIEWS = ("fac", "mor")  # the strong view (profile correlations) and the weak one (6 morphological features)


def uci_data(seed: int = 0) -> TrainTest:
    """UCI digits, views fac (216-d) and mor (6-d), 75/25 stratified split, standardised."""
    return standardize(stratified_split(load_uci_multifeature(UCI_VIEWS), 0.25, seed))


def synthetic_data(seed: int = 0) -> TrainTest:
    """The competition task (an easy, less informative view and a slow, complementary one), 4000
    samples, 50/50 split: the default probe set (1,280 samples) is then a subset of the training
    split, as in the paper, and not all of it."""
    return standardize(stratified_split(synthetic_competition(4000, seed), 0.5, seed))


DATASETS: dict[str, Callable[[int], TrainTest]] = {"uci": uci_data, "synthetic": synthetic_data}
# Training settings per data set (passed to ``run_method``); the same for every method.
TRAINING = {
    "uci": {"epochs": 40, "batch_size": 64, "hidden": 64, "feature_dim": 32},
    "synthetic": {"epochs": 40, "batch_size": 64, "hidden": 32, "feature_dim": 16},
}


def view_pid(n_resamples: int = 1000, seed: int = 0) -> dict:
    """PID (bits) of the UCI views fac and mor about the digit, with 95% basic bootstrap intervals."""
    data = load_uci_multifeature(UCI_VIEWS)
    symbols = [fastpid.Discretizer(5, 20, random_state=seed).fit_transform(view) for view in data.views]
    result = fastpid.bootstrap(*symbols, data.labels, 20, 20, 10, n_resamples=n_resamples, seed=seed)
    lower, upper = result.basic
    return {
        "views": list(UCI_VIEWS),
        "samples": len(data.labels),
        "n_resamples": n_resamples,
        "max_gap": float(result.max_gap),
        "unconverged": int(result.unconverged),
        "atoms": {
            name: {
                "estimate": float(result.estimate[k]),
                "bias": float(result.bias[k]),
                "corrected": float(result.corrected[k]),
                "lower": float(lower[k]),
                "upper": float(upper[k]),
            }
            for k, name in enumerate((*ATOMS, "mi"))
        },
    }


def compare(
    datasets: Sequence[str], methods: Sequence[str], seeds: Sequence[int], progress: bool = True, **overrides
) -> list[tuple[str, RunRecord]]:
    """(data set, record) of every method on every data set under every seed
    (``overrides`` replace ``TRAINING``); the data split is the same for every run."""
    runs = [(name, method, seed) for name in datasets for method in methods for seed in seeds]
    data = {name: DATASETS[name](0) for name in datasets}
    return [
        (name, run_method(method, data[name], seed, progress=False, **{**TRAINING[name], **overrides}))
        for name, method, seed in tqdm(runs, desc="training runs", disable=not progress)
    ]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(records: Sequence[tuple[str, RunRecord]]) -> list[dict]:
    """Mean and standard deviation over seeds per (data set, method)."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for dataset, record in records:
        groups.setdefault((dataset, record.method), []).append(record)
    rows = []
    for (dataset, method), group in groups.items():
        shares = [r.monitor_share for r in group if r.monitor_share is not None and r.monitor_seconds > 0]
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "optimizer": group[0].optimizer,
                "seeds": len(group),
                "fused_accuracy": _mean_std([r.fused_accuracy for r in group]),
                "probe_accuracy": [
                    _mean_std([r.probe_accuracy[m] for r in group]) for m in range(len(group[0].probe_accuracy))
                ],
                "wall_seconds": _mean_std([r.wall_seconds for r in group]),
                "unimodal_epochs": _mean_std([r.unimodal_epochs for r in group]),
                "monitor_share": _mean_std(shares) if shares else None,
            }
        )
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The comparison as a markdown table (accuracies in %, mean ± std over seeds)."""

    def pct(pair):
        return f"{100 * pair[0]:.1f} ± {100 * pair[1]:.1f}"

    lines = [
        "| data | method | optimiser | fused acc. | probe acc. m0 | probe acc. m1 | stage-1 epochs | wall s "
        "| PID monitor / stage 1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        share = "–" if row["monitor_share"] is None else f"{100 * row['monitor_share'][0]:.1f} %"
        lines.append(
            f"| {row['dataset']} | {row['method']} | {row['optimizer']} | {pct(row['fused_accuracy'])} | "
            f"{' | '.join(pct(p) for p in row['probe_accuracy'][:2])} | "
            f"{row['unimodal_epochs'][0]:.1f} | {row['wall_seconds'][0]:.2f} | {share} |"
        )
    return "\n".join(lines)


def format_view_pid(result: dict) -> str:
    """The UCI view PID as a markdown table."""
    lines = [
        f"PID of UCI views {' and '.join(result['views'])} about the digit ({result['samples']} samples, "
        f"{result['n_resamples']} bootstrap resamples, largest gap {result['max_gap']:.1e} bits)",
        "| atom | plug-in (bits) | bias | bias-corrected | 95% interval |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, atom in result["atoms"].items():
        lines.append(
            f"| {name} | {atom['estimate']:.4f} | {atom['bias']:+.4f} | {atom['corrected']:.4f} | "
            f"[{atom['lower']:.4f}, {atom['upper']:.4f}] |"
        )
    return "\n".join(lines)


def plot_schedules(records: Sequence[tuple[str, RunRecord]], path: Path) -> None:
    """PID atoms (pair 0-1) over epochs of each data set's first controller run, stage 1 shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for dataset, record in records:
        if record.method == "controller":
            runs.setdefault(dataset, record)
    figure, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4), squeeze=False)
    for axis, (dataset, record) in zip(axes[0], runs.items()):
        probes = [d for d in record.decisions if d["pid"] is not None]
        epochs = [d["epoch"] + 1 for d in probes]
        for atom in ATOMS:
            axis.plot(epochs, [d["pid"]["0-1"][atom] for d in probes], marker="o", label=atom)
        axis.axvspan(0, record.unimodal_epochs, color="0.9", label="stage 1 (unimodal)")
        axis.axvline(record.unimodal_epochs, color="k", linestyle="--", label="hand-over")
        for decision in probes:
            paused = [m for m, on in enumerate(decision["active"]) if not on]
            if paused:
                axis.annotate(f"pause m{paused[0]}", (decision["epoch"] + 1, 0), fontsize=7, rotation=90)
        axis.set(
            title=f"{dataset}: controller, seed {record.seed}",
            xlabel="epoch",
            ylabel="bits",
            xlim=(0, record.unimodal_epochs + record.joint_epochs),
        )
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def schedule_of(record: RunRecord) -> tuple:
    """What a controller decided: the active set at each probe and the hand-over epoch."""
    probes = tuple(tuple(d["active"]) for d in record.decisions if d["pid"] is not None)
    return probes, record.unimodal_epochs


def decision_stability(
    datasets: Sequence[str], methods: Sequence[str], probe_seeds: Sequence[int], seed: int = 0, **overrides
) -> list[dict]:
    """How often each controller's decisions (pause sets, hand-over epoch) change when only
    the probe subsample changes: one training seed, ``probe_seeds`` probe draws."""
    rows = []
    for name in datasets:
        data = DATASETS[name](0)
        for method in methods:
            schedules = [
                schedule_of(
                    run_method(method, data, seed, progress=False, probe_seed=p, **{**TRAINING[name], **overrides})
                )
                for p in probe_seeds
            ]
            rows.append(
                {
                    "dataset": name,
                    "method": method,
                    "probe_draws": len(schedules),
                    "distinct_schedules": len(set(schedules)),
                    "handover_changed": sum(s[1] != schedules[0][1] for s in schedules[1:]),
                    "pauses_changed": sum(s[0] != schedules[0][0] for s in schedules[1:]),
                    "handover_epochs": [s[1] for s in schedules],
                }
            )
    return rows


def format_stability(rows: Sequence[dict]) -> str:
    lines = [
        "| data | method | probe draws | distinct schedules | hand-over epoch changed | pause sets changed "
        "| hand-over epochs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        others = row["probe_draws"] - 1
        lines.append(
            f"| {row['dataset']} | {row['method']} | {row['probe_draws']} | {row['distinct_schedules']} | "
            f"{row['handover_changed']} of {others} | {row['pauses_changed']} of {others} | "
            f"{', '.join(map(str, row['handover_epochs']))} |"
        )
    return "\n".join(lines)


def plot_curves(records: Sequence[tuple[str, RunRecord]], path: Path) -> None:
    """Learning curves per data set: fused test accuracy and each modality's probe accuracy
    per epoch, one line per method (mean over seeds, band ± one standard deviation); the
    controller's stage 1 (mean over seeds) shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(dataset for dataset, _ in records))
    panels = ("fused test accuracy", "probe accuracy m0", "probe accuracy m1")
    figure, axes = plt.subplots(len(datasets), 3, figsize=(15, 3.6 * len(datasets)), squeeze=False)
    for row, dataset in zip(axes, datasets):
        runs: dict[str, list[RunRecord]] = {}
        for name, record in records:
            if name == dataset:
                runs.setdefault(record.method, []).append(record)
        stage1 = [r.unimodal_epochs for r in runs.get("controller", [])]
        for k, (axis, title) in enumerate(zip(row, panels)):
            for method, group in runs.items():
                values = torch.tensor(
                    [[e["fused_accuracy"] if k == 0 else e["probe_accuracy"][k - 1] for e in r.epochs] for r in group]
                )
                mean, std = 100 * values.mean(0), 100 * values.std(0, unbiased=False)
                epochs = range(1, values.shape[1] + 1)
                axis.plot(epochs, mean, label=method)
                axis.fill_between(epochs, mean - std, mean + std, alpha=0.2)
            if stage1:
                axis.axvspan(0, statistics.fmean(stage1), color="0.9", zorder=0, label="controller stage 1")
            axis.set(title=f"{dataset}: {title}", xlabel="epoch", ylabel="%")
        row[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_demo(
    out: str | Path = "results",
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    n_resamples: int = 1000,
    datasets: Sequence[str] = tuple(DATASETS),
    methods: Sequence[str] = tuple(METHODS),
    verification: dict | None = None,
    progress: bool = True,
    **overrides,
) -> dict:
    """Run parts 2 and 3, print their tables, write results.json (with ``verification``,
    the outcome of part 1, when given) and the plot to ``out``; return the results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print("\n== 2. PID of two real views ==")
    views = view_pid(n_resamples)
    print(format_view_pid(views))
    print(f"\n== 3. Two-stage controller against its baselines ({len(seeds)} seeds) ==")
    records = compare(datasets, methods, seeds, progress=progress, **overrides)
    rows = summarize(records)
    print(format_table(rows))
    monitored = [r for _, r in records if r.monitor_share is not None and r.monitor_seconds > 0]
    if monitored:
        shares = [r.monitor_share for r in monitored]
        probes = sum(sum(d["pid"] is not None for d in r.decisions) for r in monitored)
        per_probe = 1e3 * sum(r.monitor_seconds for r in monitored) / probes
        fitting = 1e3 * sum(r.discretize_seconds for r in monitored) / probes
        fitting_share = statistics.fmean(r.discretize_seconds / r.unimodal_seconds for r in monitored)
        epoch = 1e3 * statistics.fmean(r.unimodal_seconds / r.unimodal_epochs for r in monitored)
        print(
            f"PID monitoring: {100 * statistics.fmean(shares):.1f} % of stage-1 wall time on average "
            f"(at most {100 * max(shares):.1f} %) over {len(monitored)} controller runs; {per_probe:.1f} ms "
            f"per probe, {fitting:.1f} ms of it fitting the discretisers (L2 norms and PCA in torch, k-means "
            f"in fastpid's CPU ops: {100 * fitting_share:.1f} % of stage 1); {epoch:.1f} ms per stage-1 epoch"
        )
        noisy = [r for r in monitored if r.bias_seconds > 0]
        if noisy:
            noisy_probes = sum(sum(d["pid"] is not None for d in r.decisions) for r in noisy)
            print(
                f"The noise-aware rule's bias resamples: {1e3 * sum(r.bias_seconds for r in noisy) / noisy_probes:.1f} "
                "ms per probe, solved on a background thread (not in the shares above: the training thread "
                "does not wait for them)"
            )
    stability = []
    controllers = [m for m in ("controller", "controller-noise") if m in methods]
    if controllers:
        print("\nDecisions against the probe subsample (training seed 0, five probe draws):")
        stability = decision_stability(datasets, controllers, range(5), **overrides)
        print(format_stability(stability))
    plot_schedules(records, out / "pid_over_epochs.png")
    plot_curves(records, out / "training_curves.png")
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - started,
        "verification": verification,
        "view_pid": views,
        "training": {name: {**TRAINING[name], **overrides} for name in datasets},
        "summary": rows,
        "decision_stability": stability,
        "runs": [{"dataset": name, **r.to_dict()} for name, r in records],
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(
        f"\nwrote {out / 'results.json'}, {out / 'pid_over_epochs.png'} and {out / 'training_curves.png'} "
        f"({results['wall_seconds']:.0f} s)"
    )
    return results
