"""The CIFAR-10 study's claim table and accuracy-versus-cost curves.

Reads the runs of ``benchmarks/cifar_study.sh`` (``OUT/<run>/summary.json``, ``model.keras``):

* the claim table: each RDI model against its defended single-exit baseline
  (same backbone): TA on all 10,000 test images, worst-case ATA over the attack
  forms and per sample (PGD-20, first 1,000 test images), MFLOPs in both
  conventions and the cost ratio; the claim holds when the RDI model matches or
  beats both accuracies at 70% or less of the baseline's cost. "Matches" allows
  one standard error of the difference of two accuracies;
* with ``--curves``: for each RDI model, ``evaluation.tradeoff`` over ``--points``
  cost targets of the target-cost calibration (thresholds from the 5,000
  held-out training images), from the first exit's cost to the full cost, TA
  and worst-case ATA (PGD-20, every attack form, routing-aware made per policy)
  on the first ``--samples`` test images; the single-exit and pruned baselines
  as points. Writes one PNG per backbone (``evaluation.plot_tradeoff``) into
  ``--figures`` and the curves' points as JSON beside them. Each run's curve is
  kept in ``OUT/<run>/tradeoff.json`` (with its samples, points and cost
  targets) and reused when they match, so the curves can be made one run at a
  time (``--runs``) in separate invocations; a run without a curve is left off the plot.

    python benchmarks/cifar_claims.py runs/cifar
    python benchmarks/cifar_claims.py runs/cifar --curves --samples 1000 --points 8 --data-dir ../shared/data
    python benchmarks/cifar_claims.py runs/cifar --curves --runs resnet38_max_average   # one run's curve only
"""

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from rdinet_tf import data, models
from rdinet_tf import evaluation
from rdinet_tf.architecture import flops
from rdinet_tf import attacks
from rdinet_lite.files import write_json

BASELINES = {"resnet38": "resnet38_single_exit", "mobilenetv2": "mobilenetv2_single_exit"}
RDI_RUNS = {"resnet38": ["resnet38_main", "resnet38_average", "resnet38_max_average"],
            "mobilenetv2": ["mobilenetv2_max_average"]}
PRUNED_RUNS = ["resnet38_pruned", "resnet38_pruned_50"]
COST_LIMIT = 0.70


def load_summary(root, run):
    path = Path(root) / run / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def standard_error(accuracy, samples):
    return math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / samples)


def verdict(rdi, base, samples_rdi, samples_base):
    """``"beats"``, ``"matches"`` (within one standard error of the difference) or ``"below"``."""
    if rdi >= base:
        return "beats"
    error = math.hypot(standard_error(rdi, samples_rdi), standard_error(base, samples_base))
    return "matches" if base - rdi <= error else "below"


def model_point(label, summary):
    """A trained run as an ``evaluation.TradeoffPoint`` (TA on the test set, worst cases of its report)."""
    report, clean = summary["report"], summary["test_clean"]
    return evaluation.TradeoffPoint(label, clean["mflops"], clean["paper_mflops"], clean["accuracy"],
                                  report["worst_case_ata"], report["per_sample_worst_case_ata"])


def pruned_point(label, summary):
    row = summary["pruned"]
    return evaluation.TradeoffPoint(f"{label} ({row['sparsity']:.0%} sparse)", row["mflops"], row["paper_mflops"],
                                  row["accuracy"], row["ata"])


def claim_rows(root):
    """One row per RDI run whose baseline is trained too."""
    rows = []
    for backbone, baseline_run in BASELINES.items():
        base = load_summary(root, baseline_run)
        for run in RDI_RUNS[backbone]:
            rdi = load_summary(root, run)
            if base is None or rdi is None:
                continue
            b, r = model_point(baseline_run, base), model_point(run, rdi)
            n_ta = (rdi["test_clean"]["samples"], base["test_clean"]["samples"])
            n_ata = (rdi["report"]["num_samples"], base["report"]["num_samples"])
            ratio = r.mflops / b.mflops
            checks = [verdict(r.accuracy, b.accuracy, *n_ta), verdict(r.worst_case_ata, b.worst_case_ata, *n_ata)]
            holds = all(c != "below" for c in checks) and ratio <= COST_LIMIT
            rows.append({"run": run, "baseline": baseline_run, "ta": (r.accuracy, b.accuracy),
                         "worst_ata": (r.worst_case_ata, b.worst_case_ata),
                         "per_sample": (r.per_sample_worst_case_ata, b.per_sample_worst_case_ata),
                         "mflops": (r.mflops, b.mflops), "paper_mflops": (r.paper_mflops, b.paper_mflops),
                         "cost_ratio": ratio, "paper_cost_ratio": r.paper_mflops / b.paper_mflops,
                         "ta_check": checks[0], "ata_check": checks[1], "claim": "yes" if holds else "no"})
    return rows


def print_claims(rows):
    print("| RDI model | baseline | TA RDI / base | worst-case ATA RDI / base | per sample RDI / base | "
          "MFLOPs RDI / base (honest) | cost ratio honest / paper | TA | ATA | claim |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        pair = lambda key: " / ".join(f"{100 * v:.2f}%" for v in row[key])  # noqa: E731
        print(f"| {row['run']} | {row['baseline']} | {pair('ta')} | {pair('worst_ata')} | {pair('per_sample')} | "
              f"{row['mflops'][0]:.2f} / {row['mflops'][1]:.2f} | {row['cost_ratio']:.3f} / "
              f"{row['paper_cost_ratio']:.3f} | {row['ta_check']} | {row['ata_check']} | {row['claim']} |")


def run_curve(root, run, paper, splits, args, sweep):
    """``(cost targets, [TradeoffPoint])`` of ``run``: from its ``tradeoff.json`` when made with these
    settings, else swept now and kept there if ``sweep`` (the attacks kept in ``tradeoff_attacks`` until the
    sweep ends, so that an interrupted one resumes), else None."""
    path = Path(root) / run / "tradeoff.json"
    if not sweep and not path.is_file():
        return None
    model = models.load(Path(root) / run / "model.keras")
    costs = flops.exit_costs(model)
    targets = np.linspace(costs[0], costs[-1], args.points)
    settings = {"samples": args.samples, "cost_targets": [round(float(t), 6) for t in targets]}
    if path.is_file() and (kept := json.loads(path.read_text()))["settings"] == settings:
        return targets, [evaluation.TradeoffPoint(**point) for point in kept["points"]]
    if not sweep:
        return None
    attack = attacks.PGD(paper.eps, paper.step_size, paper.eval_attack_steps)
    x_test, y_test = splits.x_test[:args.samples], splits.y_test[:args.samples]
    with attacks.attack_cache(Path(root) / run / "tradeoff_attacks"):  # an interrupted sweep resumes
        points = evaluation.tradeoff(model, splits.x_val, x_test, y_test, attack, targets, progress=False)
        write_json(path, {"settings": settings, "points": [dataclasses.asdict(p) for p in points]})
    return targets, points


def curves(root, args):
    splits = data.load("cifar10", data_dir=args.data_dir)
    for backbone, runs in RDI_RUNS.items():
        lines = {}
        for run in runs:
            if load_summary(root, run) is None:
                continue
            curve = run_curve(root, run, models.MODELS[backbone].paper_recipe, splits, args,
                              sweep=not args.runs or run in args.runs)
            if curve is None:
                continue
            targets, lines[run] = curve
            print(f"\n{run}: {args.points} cost targets, {args.samples} test images")
            print("| target MFLOPs | MFLOPs honest | MFLOPs paper | TA | worst-case ATA | per sample |")
            print("|---|---|---|---|---|---|")
            for target, point in zip(targets, lines[run]):
                print(f"| {target:.2f} | {point.mflops:.2f} | {point.paper_mflops:.2f} | {100 * point.accuracy:.1f}% "
                      f"| {100 * point.worst_case_ata:.1f}% | {100 * point.per_sample_worst_case_ata:.1f}% |")
        if not lines:
            continue
        points = []
        if (base := load_summary(root, BASELINES[backbone])) is not None:
            points.append(model_point(BASELINES[backbone], base))
        if backbone == "resnet38":
            points += [pruned_point(run, s) for run in PRUNED_RUNS if (s := load_summary(root, run)) is not None]
        figure = Path(args.figures) / f"cifar10_{backbone}_tradeoff.png"
        evaluation.plot_tradeoff(lines, points, path=figure,
                               title=f"CIFAR-10 {backbone}: TA and worst-case ATA (PGD-20, {args.samples} "
                                     "test images) against cost")
        write_json(figure.with_suffix(".json"), {
            "curves": {k: [dataclasses.asdict(p) for p in v] for k, v in lines.items()},
            "points": [dataclasses.asdict(p) for p in points], "samples": args.samples})
        print(f"wrote {figure}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="runs/cifar", help="the OUT of cifar_study.sh")
    parser.add_argument("--curves", action="store_true", help="also sweep the cost targets and plot")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--samples", type=int, default=1000, help="attacked test images per curve point")
    parser.add_argument("--points", type=int, default=8, help="cost targets per RDI model")
    parser.add_argument("--figures", default="benchmarks/figures")
    parser.add_argument("--runs", type=lambda text: text.split(","), default=None,
                        help="comma-separated RDI runs to sweep now (default: every finished one)")
    args = parser.parse_args()
    known = [run for runs in RDI_RUNS.values() for run in runs]
    if args.runs and (unknown := sorted(set(args.runs) - set(known))):
        parser.error(f"--runs: unknown RDI runs {unknown}; choose among {known}")
    if args.runs and not args.curves:
        parser.error("--runs chooses the curves to sweep: pass --curves too")
    print_claims(claim_rows(args.root))
    if args.curves:
        curves(args.root, args)


if __name__ == "__main__":
    main()
