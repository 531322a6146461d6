"""The claim tables of the fast-recipe study (``benchmarks/fast_study.sh``) and its accuracy-versus-cost curves.

One table per dataset, from fast_study.sh's OUT_ROOT (run directories) or from the released models
(``benchmarks/models``: ``NAME.summary.json`` and ``NAME.suite.json``): every RDI run of a backbone
(``DATASET_BACKBONE_DEFENSE``) beside the defended single-exit baseline (``..._single_exit``) and the TF-MOT pruned
baseline at the RDI cost (``..._pruned``), four columns per model: TA (all test images), per-sample worst-case
robust accuracy (the first N test images: a sample counts if it survives every PGD form, and the AutoAttack-style
suite on the routed output where ``RUN/report_suite.json`` (released: ``NAME.suite.json``) exists; marked "PGD
only" where not), clean MFLOPs (honest) and MFLOPs under attack (the costlier of the slowdown and
threshold-slowdown attacks, with the share of the savings it keeps).

The aim, checked per RDI model: worst case at least the single-exit and the pruned baselines', TA at least the
single-exit baseline's (each "at least" allows one standard error of the difference, as ``cifar_claims.verdict``;
worst cases compared with the suite where both models had it, else PGD forms only), clean cost at most 0.70 of the
single-exit baseline's, and at least half of the savings kept under both slowdown attacks. With ``--curves``: the
target-cost curves of the RDI runs (``cifar_claims.run_curve``: thresholds from the validation images, TA and
worst-case ATA on the first ``--samples`` test images, each kept in ``RUN/tradeoff.json``), the baselines as
points, one figure per backbone.

    python benchmarks/fast_claims.py runs/fast --dataset cifar10
    python benchmarks/fast_claims.py benchmarks/models --dataset cifar10
    python benchmarks/fast_claims.py runs/fast --dataset mnist --curves --runs mnist_smallcnn_max_average \\
        --data-dir ../shared/data
"""

import argparse
import dataclasses
import json
from pathlib import Path

from cifar_claims import COST_LIMIT, model_point, pruned_point, run_curve, verdict

from rdinet_tf import data, evaluation, models
from rdinet_lite.files import write_json

BACKBONES = {"mnist": ["smallcnn"], "cifar10": ["resnet38", "mobilenetv2"]}
SAVINGS_LIMIT = 0.5


@dataclasses.dataclass(frozen=True)
class Row:
    """One model of a claim table (accuracies as fractions, costs in honest MFLOPs)."""

    run: str
    ta: float
    ta_samples: int
    worst_case: float  # with the suite where it was run
    worst_case_samples: int
    with_suite: bool
    pgd_worst_case: float  # the PGD forms alone, on the same images
    mflops: float
    attacked_mflops: float
    savings_kept: float | None  # the smaller of the two slowdown attacks'; None: a static model


def _json(path):
    return json.loads(path.read_text()) if path.is_file() else None


def run_names(root, prefix):
    """The runs under ``root`` whose names start with ``prefix``: run directories and released models."""
    root = Path(root)
    return sorted({p.name for p in root.glob(prefix + "*") if p.is_dir()}
                  | {p.name.removesuffix(".summary.json") for p in root.glob(prefix + "*.summary.json")})


def run_files(root, run):
    """``(summary, suite report)`` of the run directory ``root/run`` or the released model ``root/run.*.json``
    (None where a file is missing)."""
    root = Path(root)
    if (root / run).is_dir():
        return _json(root / run / "summary.json"), _json(root / run / "report_suite.json")
    return _json(root / f"{run}.summary.json"), _json(root / f"{run}.suite.json")


def load_row(root, run):
    """The claim-table row of ``run`` under ``root`` (a training or a pruning run), or None while it is not
    finished."""
    summary, suite = run_files(root, run)
    if summary is None:
        return None
    if "pruned" in summary:  # rdinet-prune: a static model, its final exit only
        pruned = summary["pruned"]
        worst, samples = pruned["ata"], summary["ata_samples"]
        if suite is not None:
            worst, samples = suite["per_sample_worst_case_with_autoattack"], suite["num_samples"]
        return Row(run, pruned["accuracy"], summary["dataset"]["test"], worst, samples, suite is not None,
                   pruned["ata"] if suite is None else suite["per_sample_worst_case_ata"], pruned["mflops"],
                   pruned["mflops"], None)
    report = suite or summary["report"]
    worst = report["per_sample_worst_case_with_autoattack"] if suite else report["per_sample_worst_case_ata"]
    mflops, slowdown = summary["test_clean"]["mflops"], report["slowdown"]  # no slowdown: a single exit
    return Row(run, summary["test_clean"]["accuracy"], summary["test_clean"]["samples"], worst,
               report["num_samples"], suite is not None, report["per_sample_worst_case_ata"], mflops,
               max([s["mflops"] for s in slowdown], default=mflops), min([s["savings_kept"] for s in slowdown],
                                                                        default=None))


def aim(row, single_exit, pruned):
    """``(reached, [what misses])`` of an RDI row against its baselines (None: not trained yet)."""
    misses = []
    for name, base in (("single-exit", single_exit), ("pruned", pruned)):
        if base is None:
            continue
        both = row.with_suite and base.with_suite  # else both without the suite: like against like
        ours, theirs = (row.worst_case, base.worst_case) if both else (row.pgd_worst_case, base.pgd_worst_case)
        if verdict(ours, theirs, row.worst_case_samples, base.worst_case_samples) == "below":
            misses.append(f"worst case {100 * (ours - theirs):+.1f} vs {name}{'' if both else ' (PGD only)'}")
    if single_exit is not None:
        if verdict(row.ta, single_exit.ta, row.ta_samples, single_exit.ta_samples) == "below":
            misses.append(f"TA {100 * (row.ta - single_exit.ta):+.2f}")
        if (ratio := row.mflops / single_exit.mflops) > COST_LIMIT:
            misses.append(f"cost {ratio:.2f} of single-exit")
    if row.savings_kept is not None and row.savings_kept < SAVINGS_LIMIT:
        misses.append(f"savings kept {100 * row.savings_kept:.0f}%")
    misses += [f"no {name} baseline yet" for name, base in (("single-exit", single_exit), ("pruned", pruned))
               if base is None]
    return not misses, misses


def table(root, dataset):
    """The claim table of ``dataset`` as markdown lines, one block per backbone with a finished run."""
    lines = []
    for backbone in BACKBONES[dataset]:
        prefix = f"{dataset}_{backbone}_"
        rows = {run: row for run in run_names(root, prefix) if (row := load_row(root, run)) is not None}
        if not rows:
            continue
        single_exit, pruned = rows.get(prefix + "single_exit"), rows.get(prefix + "pruned")
        lines += [f"{dataset} {backbone}:", "",
                  "| model | TA | worst case, per sample | clean MFLOPs | MFLOPs under attack (savings kept) "
                  "| cost / single-exit | aim |", "|---|---|---|---|---|---|---|"]
        for run, row in rows.items():
            is_rdi = row not in (single_exit, pruned)
            reached, misses = aim(row, single_exit, pruned) if is_rdi else (None, [])
            verdict_text = "" if not is_rdi else "reached" if reached else "; ".join(misses)
            kept = "static" if row.savings_kept is None else f"{100 * row.savings_kept:.0f}%"
            ratio = f"{row.mflops / single_exit.mflops:.3f}" if single_exit else "-"
            lines.append(f"| {run.removeprefix(prefix)} | {100 * row.ta:.2f}% | {100 * row.worst_case:.1f}% "
                         f"({row.worst_case_samples}{'' if row.with_suite else ', PGD only'}) | {row.mflops:.2f} "
                         f"| {row.attacked_mflops:.2f} ({kept}) | {ratio} | {verdict_text} |")
        lines.append("")
    return lines


def curves(root, dataset, args):
    splits = data.load(dataset, data_dir=args.data_dir)
    for backbone in BACKBONES[dataset]:
        prefix = f"{dataset}_{backbone}_"
        baselines = {prefix + "single_exit": model_point, prefix + "pruned": pruned_point}
        runs = [p.name for p in sorted(Path(root).glob(prefix + "*"))
                if p.name not in baselines and (p / "summary.json").is_file()]
        lines = {}
        for run in runs:
            curve = run_curve(root, run, models.MODELS[backbone].paper_recipe, splits, args,
                              sweep=not args.runs or run in args.runs)
            if curve is not None:
                lines[run.removeprefix(prefix)] = curve[1]
        if not lines:
            continue
        points = [point(run.removeprefix(prefix), summary) for run, point in baselines.items()
                  if (summary := _json(Path(root) / run / "summary.json")) is not None]
        figure = Path(args.figures) / f"{dataset}_{backbone}_fast_tradeoff.png"
        evaluation.plot_tradeoff(lines, points, path=figure, title=f"{dataset} {backbone}, fast recipe: TA and "
                                 f"worst-case ATA ({args.samples} test images) against cost")
        write_json(figure.with_suffix(".json"), {
            "curves": {k: [dataclasses.asdict(p) for p in v] for k, v in lines.items()},
            "points": [dataclasses.asdict(p) for p in points], "samples": args.samples})
        print(f"wrote {figure}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the OUT_ROOT of fast_study.sh, or benchmarks/models (the released runs)")
    parser.add_argument("--dataset", choices=sorted(BACKBONES), required=True)
    parser.add_argument("--curves", action="store_true", help="also sweep the cost targets and plot")
    parser.add_argument("--runs", type=lambda text: text.split(","), default=None,
                        help="comma-separated RDI runs to sweep now (default: every finished one)")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--samples", type=int, default=1000, help="attacked test images per curve point")
    parser.add_argument("--points", type=int, default=8, help="cost targets per RDI model")
    parser.add_argument("--figures", default="benchmarks/figures")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        parser.error(f"no directory {args.root}: pass the OUT_ROOT that fast_study.sh wrote its runs into")
    if args.runs and not args.curves:
        parser.error("--runs chooses the curves to sweep: pass --curves too")
    if args.curves and not any(path.is_dir() for path in Path(args.root).iterdir()):
        parser.error(f"--curves sweeps the models of run directories and keeps each curve there; {args.root} has "
                     "none: pass the OUT_ROOT of fast_study.sh")
    print("\n".join(table(args.root, args.dataset)))
    if args.curves:
        curves(args.root, args.dataset, args)


if __name__ == "__main__":
    main()
