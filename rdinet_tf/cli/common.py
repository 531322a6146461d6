"""What the Keras-side command lines share: data, attack and calibration arguments, presets, attacks, checks.

The argument helpers need no TensorFlow (``--help`` never loads it); the helpers that turn parsed arguments
into the library's objects import it when called, after parsing.
"""

from rdinet_lite.accounting import CONVENTIONS
from rdinet_lite.arguments import non_negative_float, positive_float, positive_int
from rdinet_lite.errors import InputError
from rdinet_tf.cli.defaults import DATA_DIR_ENV, DATASETS, PAPER, per_model

TRAINING_ATTACKS = ("pgd", "fast_fgsm", "n_fgsm")
EVALUATION_ATTACKS = ("pgd", "fgsm", "wrm", "noise")
CALIBRATIONS = ("equal_share", "target_cost", "robust", "none")
ROBUST_CALIBRATION_SAMPLES = 1000  # validation images the robust calibration attacks by default


def add_data_arguments(parser, required=True, default=None, help="dataset (digits is embedded: no download)"):
    """``--dataset`` and ``--data-dir``."""
    parser.add_argument("--dataset", choices=DATASETS, required=required, default=default, help=help)
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
    attacked validation images."""
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


def check_calibration_arguments(args):
    """One clear error when the calibration options do not fit ``--calibration``, before any work."""
    needs_budget = args.calibration in ("target_cost", "robust")
    if needs_budget and args.target_mflops is None:
        raise InputError(f"--calibration {args.calibration} needs --target-mflops X, the average cost budget in "
                         "MFLOPs")
    if not needs_budget and args.target_mflops is not None:
        raise InputError("--target-mflops is the budget of --calibration target_cost or robust; add one of them "
                         "or drop it")
    if args.calibration != "robust":
        given = [f"--{name.replace('_', '-')}" for name in ("adversarial_mflops", "calibration_samples")
                 if getattr(args, name) is not None]
        if given:
            raise InputError(f"{' and '.join(given)} set --calibration robust; add it or drop them")


def calibrated_policy(args, model, splits, attack, seed=0, progress=True):
    """The exit policy ``--calibration`` asks for, from the validation split; ``attack`` is the robust method's."""
    from rdinet_tf.evaluation import calibrate_robust
    from rdinet_tf.exits import ExitPolicy

    if args.calibration == "none":
        return ExitPolicy([0.0] * (model.num_exits - 1))
    if args.calibration == "robust":
        count = args.calibration_samples or ROBUST_CALIBRATION_SAMPLES
        return calibrate_robust(model, splits.x_val[:count], splits.y_val[:count], attack, args.target_mflops,
                                args.adversarial_mflops, args.convention, seed=seed, progress=progress)
    return ExitPolicy.calibrate(model, splits.x_val, method=args.calibration, target_cost=args.target_mflops,
                                convention=args.convention)


def or_default(value, default):
    """``value`` unless it was not given (None); 0 is a value, never replaced."""
    return default if value is None else value


def preset_for(image_shape, name=None):
    """The preset named ``name``, or the reference model's preset for ``image_shape``."""
    from rdinet_tf.training import PRESETS

    if name is not None:
        return PRESETS[name]
    return PRESETS["smallcnn" if tuple(image_shape)[-1] == 1 else "resnet38"]


def training_attack(args, preset, default="pgd"):
    """The training attack named by ``--train-attack`` (``--fast``: fast_fgsm; else ``default``) at the preset's eps.

    ``--step-size`` is PGD's (training and evaluation); ``--attack-steps``, which a
    single-step attack has no use for, is refused with one.
    """
    from rdinet_tf import attacks

    eps = or_default(args.eps, preset.eps)
    if args.fast and args.train_attack not in (None, "fast_fgsm"):
        raise InputError(f"--fast means --train-attack fast_fgsm; it contradicts --train-attack {args.train_attack}")
    name = args.train_attack or ("fast_fgsm" if args.fast else default)
    if name != "pgd" and args.attack_steps is not None:
        raise InputError(f"--attack-steps sets PGD's steps; the training attack {name} takes one step: drop it")
    if name == "fast_fgsm":
        return attacks.fast_fgsm(eps)
    if name == "n_fgsm":
        return attacks.NFGSM(eps)
    return attacks.PGD(eps, or_default(args.step_size, preset.step_size),
                       or_default(args.attack_steps, preset.train_attack_steps))


def evaluation_attacks(names, eps, step_size, steps):
    """Attack methods by command-line name (comma-separated): pgd, fgsm, wrm, noise."""
    from rdinet_tf import attacks

    makers = {
        "pgd": lambda: attacks.PGD(eps, step_size, steps),
        "fgsm": lambda: attacks.fgsm(eps),
        "wrm": lambda: attacks.WRM(eps, steps),
        "noise": lambda: attacks.RandomNoise(eps),
    }
    names = [n for n in names.split(",") if n]
    unknown = [n for n in names if n not in makers]
    if unknown or not names:
        raise InputError(f"unknown attack {unknown[0] if unknown else names!r}; choose from {sorted(makers)} "
                         "(comma-separated)")
    return [makers[n]() for n in names]


def objectives(text, num_exits, option="--objectives"):
    """Comma-separated attack objectives, checked for a model of ``num_exits`` exits; None: the default set.

    The command lines always have an exit policy to route with (train
    calibrates one; ``evaluate_splits`` calibrates a model saved without), so
    ``routing`` is always accepted.
    """
    from rdinet_tf import attacks

    if text is None:
        return None
    names = [o for o in text.split(",") if o]
    if not names:
        raise InputError(f"{option} names no objective; give e.g. exit_1,average,max_average,routing or leave it out")
    for name in names:
        attacks.check_objective(name, num_exits, policy=True)
    return names


def check_dataset_shape(image_shape, dataset, owner):
    """One clear error when ``dataset``'s images do not have the shape ``owner`` takes."""
    from rdinet_tf import data

    if data.DATASETS[dataset][0] != tuple(image_shape):
        raise InputError(f"{owner} takes {tuple(image_shape)} images but {dataset} has "
                         f"{data.DATASETS[dataset][0]}; pick a matching --dataset")


def check_dataset(model, dataset, owner):
    """One clear error when ``dataset``'s images or classes do not fit ``model``."""
    from rdinet_tf import data

    check_dataset_shape(model.image_shape, dataset, owner)
    classes = data.DATASETS[dataset][1]
    if model.num_classes != classes:
        raise InputError(f"{owner} has {model.num_classes} classes but {dataset} has {classes}; pick a matching "
                         "--dataset or a model trained on it")
