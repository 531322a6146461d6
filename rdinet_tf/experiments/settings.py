"""An experiment's settings as the command lines give them (names, comma-separated lists, None for the
recipe's value): the fields of the config dataclasses and their checks, and how the settings become the
library's objects (the training and evaluation attacks, the attack objectives, the calibrated exit policy); the
checks that a dataset fits a model."""

import dataclasses
import math
import os

from rdinet_tf import attacks, data, models
from rdinet_tf.catalog import EVALUATION_ATTACKS, ROBUST_CALIBRATION_SAMPLES
from rdinet_tf.evaluation import calibrate_robust
from rdinet_tf.exits import ExitPolicy
from rdinet_tf.experiments.run_directory import TRAINING
from rdinet_lite.arguments import SEED_LIMIT
from rdinet_lite.errors import InputError


# What a setting must be (None is allowed where it is the default; a field without a default is required):
# a predicate and its description.
_KINDS = {
    "flag": (lambda v: isinstance(v, bool), "True or False"),
    "positive_int": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "positive": (lambda v: _real(v) and v > 0, "a number > 0"),
    "non_negative": (lambda v: _real(v) and v >= 0, "a number >= 0"),
    "number": (lambda v: _integer(v) or isinstance(v, float), "a number"),
    "seed": (lambda v: _integer(v) and 0 <= v < SEED_LIMIT, f"an integer in [0, {SEED_LIMIT})"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "path": (lambda v: isinstance(v, (str, os.PathLike)), "a path"),
}


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value):
    return (_integer(value) or isinstance(value, float)) and math.isfinite(value)


def setting(default=None, kind="text", choices=None, training=True):
    """A field of an experiment's config dataclass: ``kind`` (a key of ``_KINDS``) or ``choices`` say what it
    may be (:func:`check_settings`); ``training=False`` marks a setting that does not change what is trained
    (a rerun of the run directory may differ in it)."""
    return dataclasses.field(default=default, metadata={"kind": kind, "choices": choices, TRAINING: training})


def check_settings(config):
    """One clear error for the first field of the dataclass ``config`` (made with :func:`setting`) that is not
    what it may be; ``kind="path"`` fields become text, as the command line gives them."""
    name = type(config).__name__
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None and field.default is None:
            continue
        choices = field.metadata["choices"]
        if choices is not None and value not in tuple(choices):
            raise InputError(f"{name}.{field.name} must be one of {', '.join(sorted(choices))}; got {value!r}")
        check, description = _KINDS[field.metadata["kind"]]
        if choices is None and not check(value):
            raise InputError(f"{name}.{field.name} must be {description}; got {value!r}")
        if field.metadata["kind"] == "path":
            object.__setattr__(config, field.name, os.fspath(value))


def or_default(value, default):
    """``value`` unless it was not given (None); 0 is a value, never replaced."""
    return default if value is None else value


def paper_recipe_for(image_shape, model_name=None):
    """The paper recipe of the reference model ``model_name``, or of the one for images of ``image_shape``."""
    return (models.spec_for_images(image_shape) if model_name is None else models.spec(model_name)).paper_recipe


def training_attack(args, paper, default="pgd"):
    """The training attack named by ``--train-attack`` (``--fast``: fast_fgsm; else ``default``) at the eps of the
    :class:`~rdinet_tf.training.recipes.PaperRecipe` ``paper``.

    ``args`` has the attack settings of the command line (parsed arguments or a
    :class:`~rdinet_tf.experiments.RunConfig`): ``eps``, ``step_size``, ``attack_steps``,
    ``train_attack`` and ``fast``. ``--step-size`` is PGD's (training and evaluation);
    ``--attack-steps``, which a single-step attack has no use for, is refused with one.
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
    unknown = [n for n in names if n not in EVALUATION_ATTACKS]
    if unknown or not names:
        raise InputError(f"unknown attack {unknown[0] if unknown else names!r}; choose from "
                         f"{sorted(EVALUATION_ATTACKS)} (comma-separated)")
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


def check_calibration(settings):
    """One clear error when the calibration settings do not fit ``settings.calibration``, before any work.

    ``settings`` has the calibration settings of the command line (parsed arguments or a
    :class:`~rdinet_tf.experiments.RunConfig`): ``calibration``, ``target_mflops``, ``adversarial_mflops``,
    ``convention`` and ``calibration_samples``.
    """
    needs_budget = settings.calibration in ("target_cost", "robust")
    if needs_budget and settings.target_mflops is None:
        raise InputError(f"--calibration {settings.calibration} needs --target-mflops X, the average cost budget "
                         "in MFLOPs")
    if not needs_budget and settings.target_mflops is not None:
        raise InputError("--target-mflops is the budget of --calibration target_cost or robust; add one of them "
                         "or drop it")
    if settings.calibration != "robust":
        given = [f"--{name.replace('_', '-')}" for name in ("adversarial_mflops", "calibration_samples")
                 if getattr(settings, name) is not None]
        if given:
            raise InputError(f"{' and '.join(given)} set --calibration robust; add it or drop them")


def calibrated_policy(settings, model, splits, attack, seed=0, progress=True):
    """The exit policy ``settings.calibration`` asks for (see :func:`check_calibration`), from the validation
    split of ``splits``; ``attack`` is the one the robust method attacks its first ``calibration_samples``
    validation images with."""
    if settings.calibration == "none":
        return ExitPolicy([0.0] * (model.num_exits - 1))
    if settings.calibration == "robust":
        count = or_default(settings.calibration_samples, ROBUST_CALIBRATION_SAMPLES)
        return calibrate_robust(model, splits.x_val[:count], splits.y_val[:count], attack, settings.target_mflops,
                                adversarial_cost=settings.adversarial_mflops, convention=settings.convention,
                                seed=seed, progress=progress)
    if settings.calibration == "target_cost":
        return ExitPolicy.calibrate(model, splits.x_val, "target_cost", target_cost=settings.target_mflops,
                                    convention=settings.convention)
    return ExitPolicy.calibrate(model, splits.x_val, "equal_share")


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
