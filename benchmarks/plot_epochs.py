"""Clean and PGD accuracy of every exit against the epoch, from the summaries of runs trained with the guard.

    python benchmarks/plot_epochs.py OUT.png SUMMARY.json [SUMMARY.json ...]

Clean: ``val_exit_k_acc`` on the validation split; PGD: ``val_exit_k_pgd_accuracy``, the guard's PGD on its
fixed held-out images with exit k attacked alone; the exits a run trained (non-zero exit weight). One row of two
panels per summary; prints the table too.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def exit_curves(history, kind):
    """``{exit number: values per epoch}`` of ``val_exit_k_acc`` (kind "clean") or ``..._pgd_accuracy`` ("pgd")."""
    suffix = "_acc" if kind == "clean" else "_pgd_accuracy"
    curves = {}
    for name, values in history.items():
        if name.startswith("val_exit_") and name.endswith(suffix) and name[len("val_exit_"):-len(suffix)].isdigit():
            curves[int(name[len("val_exit_"):-len(suffix)])] = values
    return dict(sorted(curves.items()))


def trained_exits(curves, exit_weights):
    """``curves`` of the exits the run trained: those of non-zero weight in ``exit_weights`` ("w1,w2,..."; None:
    all), so a single-exit baseline shows its one exit."""
    if exit_weights is None:
        return curves
    weights = [float(w) for w in exit_weights.split(",")]
    return {k: values for k, values in curves.items() if weights[k - 1] != 0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("summaries", type=Path, nargs="+")
    args = parser.parse_args()
    figure, axes = plt.subplots(len(args.summaries), 2, figsize=(10, 3.6 * len(args.summaries)), squeeze=False)
    for row, path in zip(axes, args.summaries):
        summary = json.loads(path.read_text())
        name = path.parent.name if path.name == "summary.json" else path.name.split(".")[0]
        for axis, kind in zip(row, ("clean", "pgd")):
            every_exit = exit_curves(summary["history"], kind)
            curves = trained_exits(every_exit, summary["args"].get("exit_weights"))
            for k, values in curves.items():
                axis.plot(range(1, len(values) + 1), [100 * v for v in values], marker="o", ms=3,
                          label=f"exit {k}", color=plt.cm.viridis(k / (len(every_exit) + 1)))
            axis.set(title=f"{name}: {kind} accuracy", xlabel="epoch", ylabel="%")
            axis.grid(alpha=0.3)
            print(f"{name} {kind}: " + "; ".join(f"exit {k} " + " ".join(f"{100 * v:.1f}" for v in values)
                                                 for k, values in curves.items()))
        row[1].legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
