"""Print the real-MNIST comparison table from the runs of benchmarks/mnist_rdi.sh.

Clean TA and MFLOPs are recomputed from each ``model.keras`` on all test
images (with the current cost accounting); ATA comes from the run's attacked
report: ``report.json`` (``python -m rdinet_tf.cli.evaluate ... --out``, i.e. ``rdinet-evaluate``) if present,
else the one in ``summary.json``.

Usage: python benchmarks/mnist_table.py runs/mnist [--data-dir ../shared/data]
"""

import argparse
import json
from pathlib import Path

from rdinet_tf import data, models
from rdinet_tf.architecture import flops

RUNS = [("single-exit SmallCNN (PGD on exit 3 only)", "single_exit"),
        ("RDI-SmallCNN, defense main", "rdi_main"),
        ("RDI-SmallCNN, defense average", "rdi_average"),
        ("RDI-SmallCNN, defense max_average", "rdi_max_average")]


def attacked_report(run):
    """The run's robustness report: ``report.json`` (a later, larger evaluation) if present, else the one in
    ``summary.json``."""
    if (run / "report.json").exists():
        return json.loads((run / "report.json").read_text())
    return json.loads((run / "summary.json").read_text())["report"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="runs/mnist")
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    splits = data.load("mnist", data_dir=args.data_dir)
    print("| model | TA (10k) | ATA per attack form | worst-case ATA | attacked samples | "
          "MFLOPs (honest) | MFLOPs (paper) | exits (%) | train s |")
    print("|" + "---|" * 9)
    for label, name in RUNS:
        run = Path(args.root) / name
        if not (run / "model.keras").exists():
            continue
        model = models.load(run / "model.keras")
        clean = model.exit_policy.predict(model, splits.x_test)
        paper = flops.exit_costs(model, "paper", thresholds=model.exit_policy.thresholds)[clean.exits].mean()
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        report = attacked_report(run)
        forms = ", ".join(f"{a['name'].split(' ', 1)[1]} {100 * a['accuracy']:.1f}" for a in report["attacks"])
        print(f"| {label} | {100 * clean.accuracy(splits.y_test):.2f}% | {forms} | "
              f"{100 * report['worst_case_ata']:.1f}% | {report['num_samples']} | {clean.mean_cost:.3f} | "
              f"{paper:.3f} | {'/'.join(f'{100 * s:.0f}' for s in clean.exit_shares)} | "
              f"{summary.get('train_seconds', 'n/a')} |")


if __name__ == "__main__":
    main()
