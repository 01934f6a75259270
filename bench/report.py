r"""Table of the CPU benchmark run: speed, accuracy and ratios measured in the same run.

    .venv/bin/python bench/report.py bench/results/cpu.json [--out bench/results/cpu-YYYY-MM-DD.md]

Reads the pytest-benchmark JSON of bench/bench_cpu.py (``--benchmark-json``),
prints the comparison table and the roofline table (bench/roofline.py) and
writes both as markdown to bench/results/cpu-<date of the run>.md, with the
machine (CPU model, threads), the date, the torch version and the git commit.

Time per joint is the median time of a call divided by the joints per call;
a ratio is the baseline's time per joint over the row's, both from this run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roofline  # noqa: E402

ACCURACY_BITS = 1e-7  # the project's float64 accuracy target: a speed target counts only at this accuracy

# (case, benchmark key, baseline key or None, target ratio, aim ratio)
ROWS = [
    ("1. one 20×20×6 joint", "large/cvxpy", None, None, None),
    ("1. one 20×20×6 joint", "large/cpu/tol=1e-08", "large/cvxpy", 100, 300),
    ("1. one 20×20×6 joint", "large/cpu/tol=1e-10", "large/cvxpy", 100, 300),
    ("1. one 20×20×6 joint", "large/torch/tol=1e-08", "large/cvxpy", None, None),
    ("2. 10,000 × 5×5×5", "batch/dit", None, None, None),
    ("2. 10,000 × 5×5×5", "batch/cpu", "batch/dit", 1000, 10000),
    ("2. 10,000 × 5×5×5", "batch/torch", "batch/dit", None, None),
    ("3a. paper, 20×20×6", "large/paper", None, None, None),
    ("3a. paper, 20×20×6", "large/cpu/tol=1e-08", "large/paper", None, None),
    ("3b. paper, 5×5×5", "small/paper", None, None, None),
    ("3b. paper, 5×5×5", "small/cpu", "small/paper", None, None),
    ("3b. paper, 5×5×5", "batch/cpu", "small/paper", None, None),
    ("4. plug-in 20×20×10, 1,280 samples", "plugin/cvxpy", None, None, None),
    ("4. plug-in 20×20×10, 1,280 samples", "plugin/cpu", "plugin/cvxpy", None, None),
]

METHODS = {
    "large/cvxpy": "cvxpy/Clarabel (gap, feas 1e-10)",
    "large/cpu/tol=1e-08": "fastpid cpu, tol 1e-8",
    "large/cpu/tol=1e-10": "fastpid cpu, tol 1e-10",
    "large/torch/tol=1e-08": "fastpid torch, tol 1e-8",
    "batch/dit": "dit cone, one by one (30 joints)",
    "batch/cpu": "fastpid cpu, one call of 10,000",
    "batch/torch": "fastpid torch, one call of 10,000",
    "large/paper": "paper solver (Adam + Sinkhorn)",
    "small/paper": "paper solver (Adam + Sinkhorn)",
    "small/cpu": "fastpid cpu, one joint per call",
    "plugin/cvxpy": "cvxpy/Clarabel (gap, feas 1e-10)",
    "plugin/cpu": "fastpid cpu, tol 1e-8",
}

# Case 5: (label, benchmark key, largest cost against one 20×20×6 joint (case 1, cpu, tol 1e-8), or None)
MANY_ROWS = [
    ("20×20×101, Dirichlet 0.7", "many/20x20x101/cpu/auto", 25),
    ("20×20×101, Dirichlet 0.7, side elimination forced", "many/20x20x101/cpu/side", None),
    ("20×20×1000, Dirichlet 0.7", "many/20x20x1000/cpu/auto", 400),
    ("plug-in 20×20×100, 1,280 samples", "many/plugin20x20x100/cpu/auto", 3),
    ("plug-in 20×20×100, 1,280 samples, side elimination forced", "many/plugin20x20x100/cpu/side", None),
    ("32×32×32, Dirichlet 0.7", "many/32x32x32/cpu/auto", None),
    ("32×32×32, Dirichlet 0.7, side elimination forced", "many/32x32x32/cpu/side", None),
]
MANY_BASELINE = "large/cpu/tol=1e-08"


def many_table(benchmarks):
    """Case 5's rows: time, elimination, accuracy and the cost against one 20×20×6 joint."""
    header = ["joint", "elimination", "time", "error (bits)", "gap (bits)", "× one 20×20×6 joint", "target", "met?"]
    rows = []
    if MANY_BASELINE not in benchmarks:
        return header, rows
    base = per_joint(benchmarks[MANY_BASELINE])
    for label, key, target in MANY_ROWS:
        if key not in benchmarks:
            continue
        bench = benchmarks[key]
        cost = per_joint(bench) / base
        met = "" if target is None else ("yes" if cost <= target and bench["error_bits"] <= ACCURACY_BITS else "no")
        rows.append(
            [
                label,
                bench.get("elimination", ""),
                seconds(per_joint(bench)),
                sci(bench["error_bits"]),
                sci(bench.get("gap_bits")),
                f"{cost:,.1f}×",
                "" if target is None else f"≤{target:,}×",
                met,
            ]
        )
    return header, rows


# (label, fastpid.pid benchmark, C++ backend alone to convergence, C++ backend alone with max_iter=0)
ROOFLINE_ROWS = [
    ("20×20×6, one joint", "large/cpu/tol=1e-08", "large/cpu/backend", "large/cpu/backend/setup"),
    ("5×5×5, batch of 10,000", "batch/cpu", "batch/cpu/backend", "batch/cpu/backend/setup"),
]


def load(path):
    with open(path) as handle:
        data = json.load(handle)
    benchmarks = {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "key" in info:
            benchmarks[info["key"]] = {
                **info,
                "median": bench["stats"]["median"],
                "rounds": bench["stats"]["rounds"],
                "iqr": bench["stats"].get("iqr", float("nan")),
            }
    return data, benchmarks


def per_joint(bench) -> float:
    return bench["median"] / bench.get("joints", 1)


def seconds(t: float) -> str:
    if t < 0:  # a difference of two medians, within the run-to-run noise
        return f"−{seconds(-t)}"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.3g}"


def ratio_text(r: float) -> str:
    return f"{r:,.0f}×" if r >= 10 else f"{r:.2g}×"


def sci(x) -> str:
    return "—" if x is None else f"{x:.1e}"


def comparison(benchmarks):
    """Rows of the main table (lists of strings) and the verdict on each target."""
    header = [
        "case",
        "method",
        "time/joint",
        "joints/s",
        "error (bits)",
        "gap (bits)",
        "ratio vs baseline",
        "target",
        "met?",
    ]
    rows, verdicts = [], []
    for case, key, baseline, target, aim in ROWS:
        if key not in benchmarks or (baseline and baseline not in benchmarks):
            continue
        bench = benchmarks[key]
        t = per_joint(bench)
        if baseline is None:
            ratio, ratio_cell = None, "baseline"
        else:
            ratio = per_joint(benchmarks[baseline]) / t
            ratio_cell = f"{ratio_text(ratio)} vs {baseline.split('/')[1]}"
        target_cell, met = "", ""
        if target is not None:
            target_cell = f"≥{target:,}× (aim {aim:,}×)"
            accurate = bench["error_bits"] <= ACCURACY_BITS
            met = ("yes, aim too" if ratio >= aim else "yes") if ratio >= target and accurate else "no"
            if ratio >= target and not accurate:
                met += " (accuracy)"
            verdicts.append((case, METHODS.get(key, key), ratio, target, aim, met))
        rows.append(
            [
                case,
                METHODS.get(key, key),
                seconds(t),
                rate(1 / t),
                sci(bench["error_bits"]),
                sci(bench.get("gap_bits")),
                ratio_cell,
                target_cell,
                met,
            ]
        )
    return header, rows, verdicts


def roofline_table(benchmarks):
    machine = {k: benchmarks.get(f"machine/{k}") for k in ("dgemm", "exp", "copy")}
    if not all(machine.values()):
        return None, None, None
    flop_rate = machine["dgemm"]["flops"] / machine["dgemm"]["median"]
    exp_rate = machine["exp"]["count"] / machine["exp"]["median"]
    bandwidth = machine["copy"]["bytes"] / machine["copy"]["median"]
    ceilings = (
        f"DGEMM {flop_rate / 1e9:.1f} Gflop/s, exp {exp_rate / 1e9:.2f} G/s, "
        f"DRAM copy {bandwidth / 1e9:.1f} GB/s (one thread)"
    )
    header = [
        "case",
        "steps",
        "Mflop/iter (dense)",
        "exp+log/iter",
        "cache MB/iter",
        "working set",
        "predicted/iter",
        "measured/iter",
        "measured ÷ predicted",
        "achieved Gflop/s",
        "set-up/joint",
        "Python side/joint",
        "predicted/joint",
        "measured/joint",
    ]
    rows = []
    for label, key, solve_key, setup_key in ROOFLINE_ROWS:
        if not all(k in benchmarks for k in (key, solve_key, setup_key)):
            continue
        solve = benchmarks[solve_key]
        n1, n2, ny = solve["shape"]
        steps = solve["steps_mean"]
        flops = roofline.flops_per_iteration(n1, n2, ny)["total"]
        predicted = roofline.predicted_seconds(n1, n2, ny, steps, flop_rate, exp_rate, bandwidth)
        setup = per_joint(benchmarks[setup_key])  # C++ set-up and one certificate
        python_side = per_joint(benchmarks[key]) - per_joint(solve)  # fastpid.pid around the backend
        measured_iteration = (per_joint(solve) - setup) / steps
        rows.append(
            [
                label,
                f"{steps:.2f}",
                f"{flops / 1e6:.3g} ({roofline.dense_flops_per_iteration(n1, n2, ny) / 1e6:.3g})",
                f"{roofline.transcendentals_per_iteration(n1, n2, ny):,}",
                f"{roofline.cache_bytes_per_iteration(n1, n2, ny) / 1e6:.2g}",
                f"{roofline.working_set_bytes(n1, n2, ny) / 1024:.0f} KiB",
                seconds(predicted["per_iteration"]),
                seconds(measured_iteration),
                f"{measured_iteration / predicted['per_iteration']:.1f}",
                f"{flops / measured_iteration / 1e9:.2f}",
                seconds(setup),
                seconds(python_side),
                seconds(setup + python_side + predicted["joint"]),
                seconds(per_joint(benchmarks[key])),
            ]
        )
    return header, rows, ceilings


def lanes_table(benchmarks):
    """Per joint, the C++ backend with small joints in lanes and one at a time (bench_cpu.test_lanes)."""
    header = ["shape", "dual variables", "one at a time", "in lanes", "lanes faster by"]
    rows = []
    for key in sorted(k for k in benchmarks if k.startswith("lanes/") and k.endswith("/on")):
        off = benchmarks.get(key[: -len("on")] + "off")
        if off is None:
            continue
        n1, n2, ny = benchmarks[key]["shape"]
        on_time, off_time = per_joint(benchmarks[key]), per_joint(off)
        rows.append(
            [f"{n1}×{n2}×{ny}", f"{(n1 + n2) * ny}", seconds(off_time), seconds(on_time), f"{off_time / on_time:.2f}×"]
        )
    rows.sort(key=lambda row: int(row[1]))
    return header, rows


def text_table(header, rows) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_facts(data) -> dict:
    """Machine, date, torch and commit of the run (recorded by bench/conftest.py; live values as fallback)."""
    info = data.get("machine_info", {}).get("fastpid", {})
    stamp = data.get("datetime")
    date = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else dt.datetime.now(dt.timezone.utc)
    if "torch_version" in info:
        torch_version = info["torch_version"]
    else:
        import torch

        torch_version = torch.__version__
    return {
        "cpu": info.get("cpu_model") or platform.processor() or "unknown",
        "threads": (
            f"{info.get('torch_threads', '?')} (torch threads; OMP_NUM_THREADS="
            f"{info.get('omp_num_threads', os.environ.get('OMP_NUM_THREADS'))}), "
            f"{info.get('logical_cpus', os.cpu_count())} logical CPUs on the machine"
        ),
        "date": date,
        "torch": torch_version,
        "commit": info.get("git_commit") or git_commit(),
        "python": data.get("machine_info", {}).get("python_version", platform.python_version()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="pytest-benchmark JSON of bench/bench_cpu.py")
    parser.add_argument("--out", help="markdown file (default bench/results/cpu-<date>.md)")
    args = parser.parse_args(argv)
    data, benchmarks = load(args.json)
    facts = run_facts(data)
    header, rows, verdicts = comparison(benchmarks)
    roof_header, roof_rows, ceilings = roofline_table(benchmarks)
    lane_header, lane_rows = lanes_table(benchmarks)
    many_header, many_rows = many_table(benchmarks)

    references = sorted(
        {(b["case"], b["reference"], b["reference_bound_bits"]) for b in benchmarks.values() if "reference" in b}
    )
    notes = [
        "time/joint: median time of a call ÷ joints per call (dit: 30 joints solved one by one per call); "
        "ratio: the baseline's time/joint ÷ this row's, both from this run.",
        "error: largest |atom − reference| over R, U1, U2, S and over the joints of the call, in bits; "
        "gap: fastpid's certified bound on the error of every atom (largest over the call).",
        f"met?: ratio ≥ target at an error ≤ {ACCURACY_BITS:g} bits.",
    ] + [
        f"reference for '{case}' joints: {source}; its own error ≤ {bound:.1e} bits"
        for case, source, bound in references
    ]
    stamp = facts["date"].strftime("%Y-%m-%d")
    lines = [
        f"machine: {facts['cpu']}; threads: {facts['threads']}",
        f"date: {facts['date'].strftime('%Y-%m-%d %H:%M UTC')}; torch {facts['torch']}; "
        f"python {facts['python']}; commit {facts['commit']}",
    ]
    print("\n".join(lines), "\n")
    print(text_table(header, rows), "\n")
    print("\n".join(notes), "\n")
    if roof_rows:
        print(f"Roofline (bench/roofline.py; ceilings measured in this run: {ceilings})\n")
        print(text_table(roof_header, roof_rows), "\n")
    if many_rows:
        print("Many classes and large alphabets (fastpid.pid, cpu, tol 1e-8)\n")
        print(text_table(many_header, many_rows), "\n")
    if lane_rows:
        print("Small joints in vector lanes (C++ backend alone, per joint)\n")
        print(text_table(lane_header, lane_rows), "\n")

    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"cpu-{stamp}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    md = [
        f"# fastpid CPU benchmarks, {stamp}",
        "",
        *[f"- {line}" for line in lines],
        f"- source: `{Path(args.json).as_posix()}` (pytest-benchmark), tables by `bench/report.py`",
        "",
        markdown_table(header, rows),
        "",
        *[f"- {note}" for note in notes],
        "",
    ]
    if verdicts:
        md += ["## Targets", ""]
        md += [
            f"- {case}, {method}: {ratio_text(ratio)} against a target of {target:,}× (aim {aim:,}×): **{met}**"
            for case, method, ratio, target, aim, met in verdicts
        ]
        md.append("")
    if roof_rows:
        md += [
            "## Roofline",
            "",
            f"Ceilings measured in this run: {ceilings}. Model: `bench/roofline.py`, "
            "notes in `bench/README.md`. steps: Newton steps per joint (the returned iterate's index, "
            "+ `solver.PATIENCE` for a joint that stalled); measured/iter = (C++ backend alone − its "
            "`max_iter=0` run) ÷ steps; set-up/joint = the backend's `max_iter=0` run (set-up, one "
            "certificate); Python side/joint = `fastpid.pid` − backend alone (checks, certificate, atoms; a "
            "difference of two medians, negative where it is below the noise); "
            "predicted/joint = set-up + Python side (both measured) + steps × predicted/iter + "
            "DRAM traffic.",
            "",
            markdown_table(roof_header, roof_rows),
            "",
        ]
    if many_rows:
        md += [
            "## Many classes and large alphabets",
            "",
            'Case 5: one joint through `fastpid.pid` ("cpu", '
            "tol 1e-8 bits) with the elimination `solver.choose_elimination` picks, and with the side "
            "elimination (the solver before the pair elimination) forced where it takes under a second; "
            "the cost is the time ÷ one 20×20×6 joint of case 1 (cpu, tol 1e-8) from this run. Both "
            "eliminations against ny and n: bench/results/eliminations-*.md.",
            "",
            markdown_table(many_header, many_rows),
            "",
        ]
    if lane_rows:
        md += [
            "## Small joints in vector lanes",
            "",
            "The C++ backend alone, per joint, on batches of "
            "Dirichlet(1) joints (~16,000 cells per call): four joints per AVX2 vector (`csrc/cpu/lanes.h`) "
            "against one at a time (`FASTPID_CPU_LANES=0`).",
            "",
            markdown_table(lane_header, lane_rows),
            "",
        ]
    out.write_text("\n".join(md))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
