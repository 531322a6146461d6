"""Print the real-MNIST comparison table from the runs of benchmarks/mnist_rdi.sh.

Usage: python benchmarks/mnist_table.py runs/mnist
"""

import json
import sys
from pathlib import Path

RUNS = [("single-exit SmallCNN (PGD on exit 3 only)", "single_exit"),
        ("RDI-SmallCNN, defense main", "rdi_main"),
        ("RDI-SmallCNN, defense average", "rdi_average"),
        ("RDI-SmallCNN, defense max_average", "rdi_max_average")]


def main(root):
    rows = []
    header = (f"| model | TA (10k) | ATA per attack ({'{n}'} attacked) | worst-case ATA | "
              "MFLOPs (honest) | MFLOPs (paper) | exits (%) | train s |")
    samples = None
    for label, name in RUNS:
        path = Path(root) / name / "summary.json"
        if not path.exists():
            continue
        summary = json.loads(path.read_text())
        report, clean = summary["report"], summary["test_clean"]
        samples = report["num_samples"]
        attacks = ", ".join(f"{a['name'].split(' ', 1)[1]} {100 * a['accuracy']:.1f}" for a in report["attacks"])
        rows.append(f"| {label} | {100 * clean['accuracy']:.2f}% | {attacks} | "
                    f"{100 * report['worst_case_ata']:.2f}% | {clean['mflops']:.3f} | {clean['paper_mflops']:.3f} | "
                    f"{'/'.join(f'{100 * s:.0f}' for s in clean['exit_shares'])} | {summary['train_seconds']:.0f} |")
    print(header.replace("{n}", str(samples)))
    print("|" + "---|" * 8)
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/mnist")
