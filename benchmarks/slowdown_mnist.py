"""Slowdown attack and defense on real MNIST: savings kept under attack, with and without the defense.

Trains RDI-SmallCNN once per slowdown weight on one small CPU budget (1 epoch
of fast adversarial training, batch 128), evaluates on the first test images
(PGD-20 accuracy attacks, PGD-20 slowdown attack, random noise) and trains a
universal slowdown perturbation on the validation split, then prints a
Markdown table::

    python benchmarks/slowdown_mnist.py --data-dir ../shared/data --out runs/slowdown --weights 0,1 [--slowdown-steps 5]

A finished run (``summary.json`` with the universal result) is not repeated; delete its folder to redo it.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from rdinet_tf import data, experiments, models
from rdinet_tf import evaluation
from rdinet_lite import files
from rdinet_tf.architecture import flops
from rdinet_tf import attacks


def run_config(data_dir, out, weight, defense, eval_samples, slowdown_steps):
    return experiments.RunConfig(
        model="smallcnn", dataset="mnist", data_dir=data_dir, defense=defense, fast=True, epochs=1, batch_size=128,
        eval_samples=eval_samples, eval_attack_steps=20, eval_attacks="pgd,noise", slowdown_weight=weight,
        slowdown_attack_steps=slowdown_steps if slowdown_steps and weight > 0 else None, out=out, quiet=True)


def universal_cost(run_dir, data_dir, eps, samples):
    """Cost of the first test images under a universal slowdown perturbation trained on the validation split."""
    model = models.load(run_dir / "model.keras")
    splits = data.load("mnist", data_dir=data_dir)
    perturbation = attacks.universal_slowdown(model, splits.x_val[:2048], eps, steps=100, seed=0)
    perturbation = np.asarray(perturbation)
    images = np.clip(splits.x_test[:samples] + perturbation, 0.0, 1.0)
    result = model.exit_policy.predict(model, images)
    return {"mflops": result.mean_cost, "accuracy": result.accuracy(splits.y_test[:samples]),
            "paper_mflops": float(flops.exit_costs(model, "paper")[result.exits].mean())}


def row(label, summary):
    report = summary["report"]
    slowdown = {s["name"]: s for s in report["slowdown"]}
    pgd, noise = slowdown["pgd slowdown"], slowdown["random_noise slowdown"]
    pgd_worst = min((a for a in report["attacks"] if a["name"].startswith("pgd ")), key=lambda a: a["accuracy"])
    universal = summary["universal"]
    kept = evaluation.savings_kept(pgd["full_mflops"], report["clean"]["mflops"], universal["mflops"])
    percent = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    return (f"| {label} | {100 * report['clean']['accuracy']:.1f} | {100 * pgd_worst['accuracy']:.1f} "
            f"({pgd_worst['name']}) | {report['clean']['mflops']:.3f} | {noise['mflops']:.3f} "
            f"| {pgd['mflops']:.3f} | {percent(pgd['savings_kept'])} / {percent(pgd['paper_savings_kept'])} "
            f"| {100 * pgd['accuracy']:.1f} | {universal['mflops']:.3f} | {percent(kept)} "
            f"| {summary['train_seconds']:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--out", default="runs/slowdown")
    parser.add_argument("--weights", default="0,1", help="comma-separated slowdown weights, one run each")
    parser.add_argument("--defense", default="max_average")
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--slowdown-steps", type=int,
                        help="PGD steps of the defense's slowdown examples (default: the fast FGSM training attack)")
    args = parser.parse_args()
    lines = ["| slowdown weight (examples) | TA % | worst PGD-20 ATA % | clean MFLOPs | noise MFLOPs | slowdown MFLOPs "
             "| savings kept % (honest / paper) | TA under slowdown % | universal MFLOPs | universal savings kept % "
             "| train s |", "|" + "---|" * 11]
    for weight in (float(w) for w in args.weights.split(",")):
        examples = f"pgd{args.slowdown_steps}" if args.slowdown_steps and weight > 0 else ""
        run_dir = Path(args.out) / "_".join(filter(None, [f"weight_{weight:g}", examples]))
        summary_path = run_dir / "summary.json"
        summary = (json.loads(summary_path.read_text()) if summary_path.exists()
                   else experiments.run(run_config(args.data_dir, run_dir, weight, args.defense, args.eval_samples,
                                                   args.slowdown_steps)))
        if "universal" not in summary:
            summary["universal"] = universal_cost(run_dir, args.data_dir, summary["attack"]["eps"], args.eval_samples)
            files.write_json(summary_path, summary)
        label = f"{weight:g} ({examples or ('fast FGSM' if weight > 0 else '-')})"
        lines.append(row(label, summary))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
