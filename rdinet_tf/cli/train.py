"""Train an RDI-Net: ``rdinet-train --model smallcnn --dataset mnist --defense max_average``.

Trains with the model's reference recipe (every part overridable),
calibrates the exit thresholds on the held-out validation split, evaluates TA
/ ATA / MFLOPs on the test split, and writes ``model.keras`` (with its
thresholds) and ``summary.json`` into ``--out``, together. A run killed at
any point and started again with the same arguments resumes where it was
(see :mod:`rdinet_tf.experiments.run_directory`).
"""

import argparse

from rdinet_tf import experiments, models
from rdinet_tf.cli import common
from rdinet_tf.experiments.pipeline import CALIBRATIONS
from rdinet_tf.training import DEFENSES, PRECISIONS, RECIPES
from rdinet_tf.training.placement import STRATEGIES
from rdinet_lite import arguments


def parser():
    parser = arguments.ArgumentParser(prog="rdinet-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(models.MODELS), default="smallcnn",
                        help="reference architecture (default smallcnn)")
    parser.add_argument("--recipe", choices=RECIPES, default="paper",
                        help="training recipe: paper (default), the reference's PGD schedule for --model; fast, "
                        "time-to-robust-accuracy training (single-step attack, one-cycle learning rate, the "
                        "catastrophic-overfitting guard; hours, not days, for a CIFAR-10 ResNet-38 on 2 CPU "
                        "cores). Every setting below overrides the recipe's")
    common.add_data_arguments(parser, required=False, help="default: the model's dataset (mnist or cifar10)")
    parser.add_argument("--defense", choices=DEFENSES, default="max_average",
                        help="training attack objective: the paper's main, average, max_average (default), or one "
                        "that knows the exit policy: routing, exit_hijack, worst_case; none: clean training")
    parser.add_argument("--epochs", type=arguments.positive_int,
                        help="default: the paper's iterations (full schedule) or the fast recipe's epochs")
    parser.add_argument("--steps-per-epoch", type=arguments.positive_int,
                        help="default: one pass over the training split")
    parser.add_argument("--batch-size", type=arguments.positive_int,
                        help="global batch, split evenly over the replicas (default: the recipe's)")
    parser.add_argument("--distribute", choices=STRATEGIES, default="none",
                        help="tf.distribute strategy: mirrored (local GPUs, or --cpu-devices), multi_worker "
                        "(MultiWorkerMirroredStrategy from TF_CONFIG; run the command on every worker)")
    parser.add_argument("--cpu-devices", type=arguments.positive_int,
                        help="with --distribute mirrored: mirror over N logical CPU devices (for testing)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="compute precision of the model's layers (mixed: variables stay float32); attacks and "
                        "losses compute in float32")
    parser.add_argument("--lr", type=arguments.positive_float,
                        help="base learning rate (paper) or the one-cycle peak (fast) (default: the recipe's)")
    parser.add_argument("--guard", action=argparse.BooleanOptionalAction,
                        help="the catastrophic-overfitting guard: after each epoch, PGD accuracy of every exit on "
                        "held-out images; stops and restores the best epoch when it collapses (default: on with "
                        "--recipe fast, off with paper)")
    common.add_attack_arguments(parser, training=True)
    parser.add_argument("--slowdown-weight", type=arguments.non_negative_float, default=0.0,
                        help="weight of the slowdown defense term: side-exit CE on slowdown examples "
                        "made with the training attack (default 0: off)")
    parser.add_argument("--slowdown-attack-steps", type=arguments.positive_int,
                        help="make the slowdown examples with PGD of this many steps (step 2.5 eps / steps) "
                        "instead of the training attack")
    parser.add_argument("--neo-kd", metavar="NKD,EOKD",
                        help="add NEO-KD's distillation terms with these weights (neighbour, exit-wise orthogonal; "
                        "e.g. 1,1) on the defense's adversarial batch")
    parser.add_argument("--abstention-weight", type=arguments.non_negative_float,
                        help="weight of the abstention term: side exits learn to stay uncertain on the adversarial "
                        "inputs they get wrong, so an attacker cannot make an early exit leave with a wrong answer "
                        "(default 0: off)")
    parser.add_argument("--eval-attacks", default="pgd", help="comma-separated: pgd,fgsm,wrm,noise")
    parser.add_argument("--eval-objectives", help="comma-separated attack objectives "
                        "(default: every exit, average, max_average, routing, exit_hijack)")
    parser.add_argument("--eval-samples", type=arguments.positive_int, help="attack the first N test images "
                        "(default: all)")
    parser.add_argument("--exit-weights", help="comma-separated loss weight per exit (default all 1); "
                        "e.g. 0,0,1 trains a single-exit baseline")
    parser.add_argument("--calibration", default="equal_share", choices=CALIBRATIONS,
                        help="thresholds from the validation split; none: no early exit (all thresholds 0)")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="random seed, in [0, 2**32) (default 0)")
    parser.add_argument("--out", default="runs/rdinet", help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--restart", action="store_true",
                        help="discard an unfinished run in --out (its backup and progress) and train anew")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv=None):
    return parser().parse_args(argv)


def run(args, callbacks=()):
    """The run of :func:`rdinet_tf.experiments.run` with the parsed ``args`` as its config; returns the summary."""
    return experiments.run(experiments.RunConfig(**vars(args)), callbacks)


main = arguments.command(parser)(run)

if __name__ == "__main__":
    raise SystemExit(main())
