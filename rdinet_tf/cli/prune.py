"""Prune a trained model's final exit to a cost budget: ``rdinet-prune``.

The matched comparison for early exit: a static (pruned) single-exit model at
the same average cost as an RDI model::

    rdinet-prune --model runs/mnist/single_exit/model.keras --dataset mnist \\
        --data-dir DIR --target-mflops 6.1 --out runs/mnist/pruned

``--target-mflops X`` picks the sparsity that brings the final-exit path's cost
to X (``--convention honest``, the default, or ``paper``); ``--target-sparsity S``
sets it directly. The model is pruned and adversarially fine-tuned (see
:mod:`rdinet_tf.baselines.pruning`), then the unpruned source and the pruned model are
evaluated through their final exit alone: TA on the test split, ATA under PGD
on its first ``--eval-samples`` images. Writes ``model.keras`` and
``summary.json`` into ``--out`` (both or neither) and prints a table. Costs are
of the final-exit path (stages + final head, no side heads); the pruned model's
count non-zero weights only.
"""

import dataclasses
from pathlib import Path

import keras
import numpy as np

from rdinet_tf import data, models
from rdinet_tf import evaluation
from rdinet_lite import files
from rdinet_tf.baselines import pruning
from rdinet_tf import attacks
from rdinet_tf.cli import common
from rdinet_lite import arguments
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import predict_exit_logits

MODEL_FILE = "model.keras"
SUMMARY_FILE = "summary.json"
COST_NOTE = ("MFLOPs of the final-exit path (stages + final head, no side heads): 10^6 conv+dense MACs; "
             "paper: 2^20 conv MACs; pruned model: sparse: non-zero weights only")


def parser():
    parser = arguments.ArgumentParser(prog="rdinet-prune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model.keras written by rdinet-train")
    common.add_data_arguments(parser, required=False, default="mnist")
    parser.add_argument("--out", required=True, help="output directory")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-mflops", type=arguments.positive_float, help="final-exit cost to reach, in --convention")
    target.add_argument("--target-sparsity", type=float, help="fraction of weights to zero, in [0, 1)")
    parser.add_argument("--convention", choices=["honest", "paper"], default="honest",
                        help="cost convention of --target-mflops (see rdinet_tf.architecture.flops)")
    parser.add_argument("--epochs", type=arguments.positive_int, default=1)
    parser.add_argument("--steps-per-epoch", type=arguments.positive_int, help="default: one pass over the training split")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=128)
    parser.add_argument("--lr", type=arguments.positive_float, default=0.01, help="SGD learning rate (momentum 0.9)")
    common.add_attack_arguments(parser, training=True)
    parser.add_argument("--eval-samples", type=arguments.positive_int, default=1000, help="attack the first N test images")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="random seed, in [0, 2**32) (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv=None):
    return parser().parse_args(argv)


def run(args):
    """Prune, fine-tune, evaluate and save as ``args`` says; returns the summary."""
    if args.target_sparsity is not None:
        pruning.check_sparsity(args.target_sparsity)
    files.check_output(args.out, inputs=[args.model])  # before Path(""), which is "."
    out = Path(args.out)
    _check_out(out, args)
    with files.lock(out):
        _check_out(out, args)  # as it is now that nobody else writes it
        return _prune(args, out)


def _check_out(out, args):
    files.check_output(out, inputs=[args.model])
    existing = [name for name in (MODEL_FILE, SUMMARY_FILE) if (out / name).exists()]
    if existing and not args.overwrite:
        raise InputError(f"{out} already holds {' and '.join(existing)} (an earlier run's); pass --overwrite to "
                         "replace them or choose another --out")


def _prune(args, out):
    source = models.load(args.model)
    pruning.check_model(source)
    common.check_dataset(source, args.dataset, args.model)
    sparsity = (args.target_sparsity if args.target_mflops is None
                else pruning.sparsity_for_cost(source, args.target_mflops, args.convention))
    paper = common.paper_recipe_for(source.image_shape)
    attack = common.training_attack(args, paper)
    eval_attack = attacks.PGD(attack.eps, common.or_default(args.step_size, paper.step_size),
                              common.or_default(args.eval_attack_steps, paper.eval_attack_steps))
    splits = data.load(args.dataset, data_dir=args.data_dir, seed=args.seed)

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
    files.publish(out, {MODEL_FILE: result.model.save, SUMMARY_FILE: files.json_writer(summary)},
                  replace=args.overwrite)
    print(table(rows, eval_attack, samples))
    print(f"\nwrote {out / MODEL_FILE} and {out / SUMMARY_FILE}")
    return summary


def evaluate_final_exit(model, splits, attack, samples, sparse, progress=False):
    """The model through its final exit alone: TA (test split), ATA (first ``samples``), sparsity, cost."""
    final_exit = model.num_exits - 1
    report = evaluation.robustness_report(
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


main = arguments.command(parser)(run)

if __name__ == "__main__":
    raise SystemExit(main())
