"""What the Keras-side command lines share: the data and attack arguments (their values become the library's
objects in :mod:`rdinet_tf.experiments.settings`)."""

from rdinet_tf import data
from rdinet_lite.arguments import non_negative_float, positive_int
from rdinet_tf.experiments.settings import TRAINING_ATTACKS


def add_data_arguments(parser, required=True, default=None, help="dataset (digits is embedded: no download)"):
    """``--dataset`` and ``--data-dir``."""
    parser.add_argument("--dataset", choices=sorted(data.DATASETS), required=required, default=default, help=help)
    parser.add_argument("--data-dir", help=f"local data directory (else ${data.DATA_DIR_ENV} or tfds)")


def add_attack_arguments(parser, training):
    """``--eps``, ``--step-size`` and the attack steps; ``training`` adds the training attack and the eval steps."""
    parser.add_argument("--eps", type=non_negative_float, help="L-inf radius (default: the model's paper recipe)")
    parser.add_argument("--step-size", type=non_negative_float, help="PGD step size (default: the paper recipe's)")
    parser.add_argument("--attack-steps", type=positive_int,
                        help=("training" if training else "evaluation") + " PGD steps (default: the paper recipe's)")
    if training:
        parser.add_argument("--train-attack", choices=TRAINING_ATTACKS,
                            help="training attack: pgd (the paper's), fast_fgsm (FGSM, random start, step 1.25 "
                            "eps), n_fgsm (noise 2 eps, step eps, no projection) (default: the recipe's)")
        parser.add_argument("--fast", action="store_true", help="the same as --train-attack fast_fgsm (CPU budget)")
        parser.add_argument("--eval-attack-steps", type=positive_int,
                            help="evaluation PGD steps (default: the paper recipe's)")
