"""What the Keras-side command lines share: data and attack arguments, paper recipes, attacks, shape checks."""

from rdinet_tf import attacks, data, models
from rdinet_lite.arguments import non_negative_float, positive_int
from rdinet_lite.errors import InputError


def add_data_arguments(parser, required=True, default=None, help="dataset (digits is embedded: no download)"):
    """``--dataset`` and ``--data-dir``."""
    parser.add_argument("--dataset", choices=sorted(data.DATASETS), required=required, default=default, help=help)
    parser.add_argument("--data-dir", help=f"local data directory (else ${data.DATA_DIR_ENV} or tfds)")


TRAINING_ATTACKS = ("pgd", "fast_fgsm", "n_fgsm")


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


def or_default(value, default):
    """``value`` unless it was not given (None); 0 is a value, never replaced."""
    return default if value is None else value


def paper_recipe_for(image_shape, model_name=None):
    """The paper recipe of the reference model ``model_name``, or of the one for images of ``image_shape``."""
    return (models.spec_for_images(image_shape) if model_name is None else models.spec(model_name)).paper_recipe


def training_attack(args, paper, default="pgd"):
    """The training attack named by ``--train-attack`` (``--fast``: fast_fgsm; else ``default``) at the eps of the
    :class:`~rdinet_tf.training.recipes.PaperRecipe` ``paper``.

    ``--step-size`` is PGD's (training and evaluation); ``--attack-steps``, which a
    single-step attack has no use for, is refused with one.
    """
    eps = or_default(args.eps, paper.eps)
    if args.fast and args.train_attack not in (None, "fast_fgsm"):
        raise InputError(f"--fast means --train-attack fast_fgsm; it contradicts --train-attack {args.train_attack}")
    name = args.train_attack or ("fast_fgsm" if args.fast else default)
    if name != "pgd" and args.attack_steps is not None:
        raise InputError(f"--attack-steps sets PGD's steps; the training attack {name} takes one step: drop it")
    if name == "fast_fgsm":
        return attacks.fast_fgsm(eps)
    if name == "n_fgsm":
        return attacks.NFGSM(eps)
    return attacks.PGD(eps, or_default(args.step_size, paper.step_size),
                       or_default(args.attack_steps, paper.train_attack_steps))


def evaluation_attacks(names, eps, step_size, steps):
    """Attack methods by command-line name (comma-separated): pgd, fgsm, wrm, noise."""
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
    if data.DATASETS[dataset][0] != tuple(image_shape):
        raise InputError(f"{owner} takes {tuple(image_shape)} images but {dataset} has "
                         f"{data.DATASETS[dataset][0]}; pick a matching --dataset")


def check_dataset(model, dataset, owner):
    """One clear error when ``dataset``'s images or classes do not fit ``model``."""
    check_dataset_shape(model.image_shape, dataset, owner)
    classes = data.DATASETS[dataset][1]
    if model.num_classes != classes:
        raise InputError(f"{owner} has {model.num_classes} classes but {dataset} has {classes}; pick a matching "
                         "--dataset or a model trained on it")
