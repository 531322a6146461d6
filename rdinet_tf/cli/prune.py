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

from rdinet_lite import arguments
from rdinet_lite.accounting import CONVENTIONS
from rdinet_tf.cli import common


def parser():
    parser = arguments.ArgumentParser(prog="rdinet-prune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model.keras written by rdinet-train")
    common.add_data_arguments(parser, required=False, default="mnist",
                              help="dataset (default: mnist; digits is embedded: no download)")
    parser.add_argument("--out", required=True, help="output directory (model.keras and summary.json)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-mflops", type=arguments.positive_float,
                        help="final-exit cost to reach, in MFLOPs of --convention (this or --target-sparsity)")
    target.add_argument("--target-sparsity", type=float, help="fraction of weights to zero, in [0, 1)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="honest",
                        help="cost convention of --target-mflops: honest (10^6 conv+dense multiply-adds) or paper "
                        "(2^20 conv multiply-adds) (default: honest)")
    parser.add_argument("--epochs", type=arguments.positive_int, default=1,
                        help="adversarial fine-tuning epochs while pruning (default: 1)")
    parser.add_argument("--steps-per-epoch", type=arguments.positive_int,
                        help="default: one pass over the training split")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=128,
                        help="fine-tuning batch (default: 128)")
    parser.add_argument("--lr", type=arguments.positive_float, default=0.01,
                        help="SGD learning rate, momentum 0.9 (default: 0.01)")
    common.add_attack_arguments(parser, training=True,
                                models="reference model, smallcnn for 1-channel images and resnet38 for 3-channel")
    parser.add_argument("--eval-samples", type=arguments.positive_int, default=1000,
                        help="attack the first N test images (default: 1000)")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="random seed, in [0, 2**32) (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv=None):
    return parser().parse_args(argv)


def run(args):
    """The run of :func:`rdinet_tf.experiments.prune` with the parsed ``args`` as its config; returns the summary."""
    from rdinet_tf import experiments  # after parsing: --help loads no TensorFlow

    return experiments.prune(experiments.PruneConfig(**vars(args)))


main = arguments.command(parser)(run)

if __name__ == "__main__":
    raise SystemExit(main())
