"""Train an RDI-Net: ``rdinet-train --model smallcnn --dataset mnist --recipe fast --out runs/mnist``.

Trains with the model's recipe (every part overridable), calibrates the exit
thresholds on the held-out validation split, evaluates TA / ATA / MFLOPs on the
test split, and writes ``model.keras`` (with its thresholds) and
``summary.json`` into ``--out``, together. A run killed at any point and
started again with the same arguments resumes where it was. The run is
``rdinet_tf.experiments.run`` of the arguments as a ``RunConfig``. Also
``python -m rdinet_tf.train``.
"""

import argparse

from rdinet_lite import arguments
from rdinet_tf.cli import common
from rdinet_tf.cli.common import per_model
from rdinet_tf.catalog import (DEFENSES, EVALUATION_ATTACKS, FAST_RECIPES as FAST, MODEL_DATASETS, MODELS,
                               PAPER_RECIPES as PAPER, PRECISIONS, RECIPES, STRATEGIES)


EPILOG = ("Time: --recipe paper is the authors' schedule, in iterations "
          f"{per_model(PAPER, 'iterations')}: hours (smallcnn) to days (resnet38, mobilenetv2) on a CPU. "
          "--recipe fast trains the same models in minutes (smallcnn) to hours (resnet38, mobilenetv2). A run that "
          "will take an hour or more says so, with its estimate, after its first steps.")


def parser():
    parser = arguments.ArgumentParser(prog="rdinet-train", description=__doc__.split("\n\n")[0], epilog=EPILOG)
    parser.add_argument("--model", choices=MODELS, default="smallcnn",
                        help="reference architecture (default: smallcnn)")
    parser.add_argument("--recipe", choices=RECIPES, default="paper",
                        help="training recipe: paper, the reference's PGD schedule for --model; fast, "
                        "time-to-robust-accuracy training (single-step attack, one-cycle learning rate, the "
                        "catastrophic-overfitting guard; hours, not days, for a CIFAR-10 ResNet-38 on 2 CPU "
                        "cores). Every setting below overrides the recipe's (default: paper)")
    common.add_data_arguments(parser, required=False,
                              help=f"dataset (default per --model: {per_model(MODEL_DATASETS)}; digits is "
                              "embedded: no download)")
    parser.add_argument("--defense", choices=DEFENSES, default="max_average",
                        help="training attack objective: the paper's main, average, max_average, or one that "
                        "knows the exit policy: routing, exit_hijack, worst_case; none: clean training "
                        "(default: max_average)")
    parser.add_argument("--epochs", type=arguments.positive_int,
                        help="training epochs (default: --recipe paper's iterations in whole epochs, iterations "
                        f"{per_model(PAPER, 'iterations')}; --recipe fast: {per_model(FAST, 'epochs')})")
    parser.add_argument("--steps-per-epoch", type=arguments.positive_int,
                        help="default: one pass over the training split")
    parser.add_argument("--batch-size", type=arguments.positive_int,
                        help="global batch, split evenly over the replicas (default: --recipe paper: "
                        f"{per_model(PAPER, 'batch_size')}; --recipe fast: {per_model(FAST, 'batch_size')})")
    parser.add_argument("--distribute", choices=STRATEGIES, default="none",
                        help="tf.distribute strategy: none, mirrored (local GPUs, or --cpu-devices), multi_worker "
                        "(MultiWorkerMirroredStrategy from TF_CONFIG; run the command on every worker) "
                        "(default: none)")
    parser.add_argument("--cpu-devices", type=arguments.positive_int,
                        help="with --distribute mirrored: mirror over N logical CPU devices, for testing "
                        "(default: the GPUs)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="Keras dtype policy of the model; attacks and losses compute in float32 "
                        "(default: float32)")
    parser.add_argument("--lr", type=arguments.positive_float,
                        help="learning rate (default: --recipe paper's base rate, "
                        f"{per_model(PAPER, 'learning_rate')}; --recipe fast's one-cycle peak, "
                        f"{per_model(FAST, 'peak_learning_rate')})")
    parser.add_argument("--guard", action=argparse.BooleanOptionalAction,
                        help="the catastrophic-overfitting guard: after each epoch, PGD accuracy of every exit on "
                        "held-out images; stops and restores the best epoch when it collapses or diverges (default: "
                        "on with --recipe fast, off with paper)")
    common.add_attack_arguments(parser, training=True, train_attack_default="pgd; --recipe fast: "
                                + per_model(FAST, "attack"))
    parser.add_argument("--slowdown-weight", type=arguments.non_negative_float, default=0.0,
                        help="weight of the slowdown defense term: side-exit CE on slowdown examples "
                        "made with the training attack (default: 0, off)")
    parser.add_argument("--slowdown-attack-steps", type=arguments.positive_int,
                        help="make the slowdown examples with PGD of this many steps (step 2.5 eps / steps) "
                        "(default: the training attack makes them)")
    parser.add_argument("--neo-kd", metavar="NKD,EOKD",
                        help="add NEO-KD's distillation terms with these weights (neighbour, exit-wise orthogonal; "
                        "e.g. 1,1) on the defense's adversarial batch (default: off)")
    parser.add_argument("--abstention-weight", type=arguments.non_negative_float,
                        help="weight of the abstention term: side exits learn to stay uncertain on the adversarial "
                        "inputs they get wrong, so an attacker cannot make an early exit leave with a wrong answer "
                        "(default: 0, off)")
    parser.add_argument("--eval-attacks", default="pgd",
                        help=f"final report's attacks, comma-separated: {','.join(EVALUATION_ATTACKS)} "
                        "(default: pgd)")
    parser.add_argument("--eval-objectives", help="comma-separated attack objectives "
                        "(default: every exit, average, max_average, routing, exit_hijack)")
    parser.add_argument("--eval-samples", type=arguments.positive_int, help="attack the first N test images "
                        "(default: all)")
    parser.add_argument("--exit-weights", help="comma-separated loss weight per exit, e.g. 0,0,1 trains a "
                        "single-exit baseline (default: 1 for every exit)")
    common.add_calibration_arguments(parser, "equal_share", "equal_share")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="random seed, in [0, 2**32) (default: 0)")
    parser.add_argument("--out", default="runs/rdinet", help="output directory (default: runs/rdinet)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--restart", action="store_true",
                        help="discard an unfinished run in --out (its backup and progress) and train anew")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv=None):
    return parser().parse_args(argv)


def run(args, callbacks=()):
    """The run of :func:`rdinet_tf.experiments.run` with the parsed ``args`` as its config; returns the summary."""
    from rdinet_tf import experiments  # after parsing: --help loads no TensorFlow

    return experiments.run(experiments.RunConfig(**vars(args)), callbacks)


main = arguments.command(parser)(run)

if __name__ == "__main__":
    raise SystemExit(main())
