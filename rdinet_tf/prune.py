"""Prune a trained model's final exit to a cost budget: ``python -m rdinet_tf.prune``.

The matched comparison for early exit: a static (pruned) single-exit model at
the same average cost as an RDI model::

    python -m rdinet_tf.prune --model runs/mnist/single_exit/model.keras --dataset mnist \\
        --data-dir DIR --target-mflops 6.1 --out runs/mnist/pruned

``--target-mflops X`` picks the sparsity that brings the final-exit path's cost
to X (``--convention honest``, the default, or ``paper``); ``--target-sparsity S``
sets it directly. The model is pruned and adversarially fine-tuned (see
:mod:`rdinet_tf.pruning`), then the unpruned source and the pruned model are
evaluated through their final exit alone: TA on the test split, ATA under PGD
on its first ``--eval-samples`` images. Writes ``model.keras`` and
``summary.json`` into ``--out`` (both or neither) and prints a table. Costs are
of the final-exit path (stages + final head, no side heads); the pruned model's
count non-zero weights only.
"""

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

import keras
import numpy as np

from rdinet_tf import attacks, data, evaluate, files, pruning
from rdinet_tf.errors import InputError
from rdinet_tf.policy import predict_exit_logits
from rdinet_tf.training import PRESETS

MODEL_FILE = "model.keras"
SUMMARY_FILE = "summary.json"
COST_NOTE = ("MFLOPs of the final-exit path (stages + final head, no side heads): 10^6 conv+dense MACs; "
             "paper: 2^20 conv MACs; pruned model: sparse: non-zero weights only")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rdinet_tf.prune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model.keras written by rdinet_tf.train")
    parser.add_argument("--dataset", choices=sorted(data.DATASETS), default="mnist")
    parser.add_argument("--data-dir", help="local data directory (else tfds or $RDINET_DATA_DIR)")
    parser.add_argument("--out", required=True, help="output directory")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-mflops", type=float, help="final-exit cost to reach, in --convention")
    target.add_argument("--target-sparsity", type=float, help="fraction of weights to zero, in [0, 1)")
    parser.add_argument("--convention", choices=["honest", "paper"], default="honest",
                        help="cost convention of --target-mflops (see rdinet_tf.flops)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training split")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--fast", action="store_true",
                        help="fine-tune with FGSM, random start, step 1.25 eps instead of PGD")
    parser.add_argument("--eps", type=float, help="default: the preset of the image shape (0.3 for 28x28x1)")
    parser.add_argument("--step-size", type=float, help="PGD step size (training and evaluation)")
    parser.add_argument("--attack-steps", type=int, help="fine-tune PGD steps (default: preset)")
    parser.add_argument("--eval-attack-steps", type=int, help="evaluation PGD steps (default: preset)")
    parser.add_argument("--eval-samples", type=int, default=1000, help="attack the first N test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def run(args):
    """Prune, fine-tune, evaluate and save as ``args`` says; returns the summary."""
    if args.target_sparsity is not None:
        pruning.check_sparsity(args.target_sparsity)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a directory (it is created if missing)")
    source = files.load_model(args.model)
    pruning.check_model(source)
    if data.DATASETS[args.dataset][0] != source.image_shape:
        raise InputError(f"{args.model} takes {source.image_shape} images but {args.dataset} has "
                         f"{data.DATASETS[args.dataset][0]}; pick a matching --dataset")
    sparsity = (args.target_sparsity if args.target_mflops is None
                else pruning.sparsity_for_cost(source, args.target_mflops, args.convention))
    splits = data.load(args.dataset, data_dir=args.data_dir, seed=args.seed)
    preset = PRESETS["smallcnn" if source.image_shape[-1] == 1 else "resnet38"]
    eps = preset.eps if args.eps is None else args.eps
    step_size = args.step_size or preset.step_size
    attack = (attacks.fast_fgsm(eps) if args.fast
              else attacks.PGD(eps, step_size, args.attack_steps or preset.train_attack_steps))
    eval_attack = attacks.PGD(eps, step_size, args.eval_attack_steps or preset.eval_attack_steps)

    keras.utils.set_random_seed(args.seed)
    result = pruning.prune_final_exit(
        source, splits.x_train, splits.y_train, sparsity, attack, epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed)
    samples = min(args.eval_samples, len(splits.x_test))
    rows = {"source": evaluate_final_exit(source, splits, eval_attack, samples, False, not args.quiet),
            "pruned": evaluate_final_exit(result.model, splits, eval_attack, samples, True, not args.quiet)}
    summary = {
        "args": vars(args),
        "dataset": {"name": args.dataset, "source": splits.source, "train": len(splits.x_train),
                    "test": len(splits.x_test)},
        "convention": args.convention,
        "target_mflops": args.target_mflops,
        "target_sparsity": result.target_sparsity,
        "sparsity": result.sparsity,
        "layer_sparsity": result.layer_sparsity,
        "schedule": result.schedule,
        "fine_tune": {"attack": dataclasses.asdict(attack), "epochs": args.epochs, "steps": result.steps,
                      "batch_size": args.batch_size, "learning_rate": args.lr,
                      "seconds": round(result.seconds, 1), "loss": result.loss},
        "eval_attack": dataclasses.asdict(eval_attack),
        "ata_samples": samples,
        "cost_note": COST_NOTE,
        "source": rows["source"],
        "pruned": rows["pruned"],
    }
    write_outputs(out, result.model, summary)
    print(table(rows, eval_attack, samples))
    print(f"\nwrote {out / MODEL_FILE} and {out / SUMMARY_FILE}")
    return summary


def evaluate_final_exit(model, splits, attack, samples, sparse, progress=False):
    """The model through its final exit alone: TA (test split), ATA (first ``samples``), sparsity, cost."""
    final_exit = model.num_exits - 1
    report = evaluate.robustness_report(
        model, splits.x_test[:samples], splits.y_test[:samples], [attack],
        policy=pruning.single_exit_policy(model), objectives=[f"exit_{final_exit + 1}"], progress=progress,
        slowdown=False)
    logits = predict_exit_logits(model, splits.x_test)[final_exit]
    return {"accuracy": float(np.mean(logits.argmax(-1) == splits.y_test)),
            "ata": report.exit_adversarial_accuracy[attack.name][final_exit],
            "sparsity": pruning.measured_sparsity(model)[0],
            "mflops": pruning.final_exit_cost(model, "honest", sparse),
            "paper_mflops": pruning.final_exit_cost(model, "paper", sparse)}


def table(rows, attack, samples):
    """The source and pruned rows as a printable table."""
    ata = f"ATA ({attack.name}-{attack.steps}, {samples})"
    lines = [f"{'model':<24}{'sparsity':>9}{'TA':>9}{ata:>24}{'MFLOPs':>9}{'paper':>9}"]
    for name, row in rows.items():
        lines.append(f"{name:<24}{row['sparsity']:>9.1%}{row['accuracy']:>9.2%}{row['ata']:>24.2%}"
                     f"{row['mflops']:>9.3f}{row['paper_mflops']:>9.3f}")
    lines.append(f"({COST_NOTE})")
    return "\n".join(lines)


def write_outputs(out, model, summary):
    """``model.keras`` and ``summary.json`` in ``out``, both or neither."""
    created = not out.exists()
    try:
        files.save_model(model, out / MODEL_FILE)
        files.write_json(out / SUMMARY_FILE, summary)
    except BaseException:
        (out / MODEL_FILE).unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except (InputError, OSError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
