"""What the Keras-side command lines share: the data, attack and calibration arguments.

They need no TensorFlow (``--help`` never loads it); the parsed values become the library's objects in
:mod:`rdinet_tf.experiments.settings`, after parsing.
"""

from rdinet_lite.accounting import CONVENTIONS
from rdinet_lite.arguments import non_negative_float, positive_float, positive_int
from rdinet_tf.catalog import (CALIBRATIONS, DATA_DIR_ENV, DATASETS, MODELS, PAPER_RECIPES as PAPER,
                               ROBUST_CALIBRATION_SAMPLES, TRAINING_ATTACKS)


def number(value, of_255=False):
    """``value`` as a person writes it: the shortest form, or ``k/255`` for a pixel radius (``of_255``)."""
    if of_255 and 0 < value < 1 and round(value * 255, 9) == round(value * 255):
        return f"{round(value * 255)}/255"
    return value if isinstance(value, str) else f"{value:,}" if isinstance(value, int) else f"{value:g}"


def per_model(table, key=None):
    """``table[model][key]`` (``table[model]`` without a key) for each reference model, equal values together:
    "0.3 for smallcnn, 8/255 for resnet38 and mobilenetv2" (one value for all: just the value)."""
    groups = {}
    for model in MODELS:
        value = table[model] if key is None else table[model][key]
        groups.setdefault(number(value, of_255=key in ("eps", "step_size")), []).append(model)
    if len(groups) == 1:
        return next(iter(groups))
    return ", ".join(f"{value} for {' and '.join(names)}" for value, names in groups.items())


def add_data_arguments(parser, required=True, default=None, help="dataset (digits is embedded: no download)"):
    """``--dataset`` and ``--data-dir``."""
    parser.add_argument("--dataset", choices=tuple(DATASETS), required=required, default=default, help=help)
    parser.add_argument("--data-dir", help=f"local data directory (default: ${DATA_DIR_ENV} if set, else "
                        "tensorflow-datasets downloads mnist or cifar10)")


def add_attack_arguments(parser, training, models="--model", train_attack_default=None):
    """``--eps``, ``--step-size`` and the attack steps; ``training`` adds the training attack and the eval steps.

    ``models`` says what picks the per-model defaults; ``train_attack_default`` is the training attack's default
    in words.
    """
    parser.add_argument("--eps", type=non_negative_float,
                        help=f"L-inf radius (default per {models}: {per_model(PAPER, 'eps')})")
    parser.add_argument("--step-size", type=non_negative_float,
                        help=f"PGD step size (default per {models}: {per_model(PAPER, 'step_size')})")
    if training:
        parser.add_argument("--attack-steps", type=positive_int, help="training PGD steps (default per "
                            f"{models}: {per_model(PAPER, 'train_attack_steps')})")
        parser.add_argument("--train-attack", choices=TRAINING_ATTACKS,
                            help="training attack: pgd (the paper's), fast_fgsm (FGSM, random start, step 1.25 "
                            "eps), n_fgsm (noise 2 eps, step eps, no projection) (default: "
                            f"{train_attack_default or 'pgd'})")
        parser.add_argument("--fast", action="store_true", help="the same as --train-attack fast_fgsm (CPU budget)")
    parser.add_argument("--eval-attack-steps" if training else "--attack-steps", type=positive_int,
                        help=f"evaluation PGD steps (default per {models}: {per_model(PAPER, 'eval_attack_steps')})")


def add_calibration_arguments(parser, default, default_help):
    """``--calibration`` and what its methods need: the cost budget, its convention and the robust method's
    attacked validation images (checked by :func:`rdinet_tf.experiments.settings.check_calibration`)."""
    parser.add_argument("--calibration", choices=CALIBRATIONS, default=default,
                        help="exit thresholds from the validation split: equal_share (about the same number of "
                        "images leaves at each exit), target_cost (the most accurate thresholds within "
                        "--target-mflops), robust (the highest worst-case accuracy under PGD at the evaluation "
                        "settings, attacking every single exit, average and max_average, within --target-mflops; "
                        f"slow), none (no early exit: every image runs to the last exit) (default: {default_help})")
    parser.add_argument("--target-mflops", type=positive_float,
                        help="average cost budget of --calibration target_cost or robust, in MFLOPs of "
                        "--convention (required by them)")
    parser.add_argument("--adversarial-mflops", type=positive_float,
                        help="with --calibration robust: also keep the average cost on every attacked set within "
                        "this budget (default: no such budget)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="honest",
                        help="cost convention of --target-mflops: honest (10^6 conv+dense multiply-adds) or "
                        "paper (2^20 conv multiply-adds) (default: honest)")
    parser.add_argument("--calibration-samples", type=positive_int,
                        help="validation images --calibration robust attacks (default: "
                        f"{ROBUST_CALIBRATION_SAMPLES}); the other methods use the whole validation split")
