"""What the command lines offer and their defaults, as plain values: building a parser (and ``--help``) loads
no TensorFlow. Each value is the library's (tests/test_cli_help.py compares them); the library's modules
stay the source, this is their copy for the parsers.
"""

MODELS = ("smallcnn", "resnet38", "mobilenetv2")  # rdinet_tf.models.MODELS
DATASETS = ("mnist", "cifar10", "digits")  # rdinet_tf.data.DATASETS
DATA_DIR_ENV = "RDINET_DATA_DIR"  # rdinet_tf.data.DATA_DIR_ENV
RECIPES = ("paper", "fast")  # rdinet_tf.training.RECIPES
DEFENSES = ("none", "main", "average", "max_average", "routing", "exit_hijack", "worst_case")  # training.DEFENSES
STRATEGIES = ("none", "mirrored", "multi_worker")  # rdinet_tf.training.placement.STRATEGIES
TRAINING_PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # rdinet_tf.training.PRECISIONS
QUANTIZATIONS = ("float32", "float16", "dynamic_int8", "int8")  # rdinet_tf.export.QUANTIZATIONS
TRAINING_ATTACKS = ("pgd", "fast_fgsm", "n_fgsm")  # rdinet_tf.experiments.settings.TRAINING_ATTACKS
EVALUATION_ATTACKS = ("pgd", "fgsm", "wrm", "noise")  # rdinet_tf.experiments.settings.evaluation_attacks
CALIBRATIONS = ("equal_share", "target_cost", "robust", "none")  # rdinet_tf.experiments.settings.CALIBRATIONS
ROBUST_CALIBRATION_SAMPLES = 1000  # rdinet_tf.experiments.settings.ROBUST_CALIBRATION_SAMPLES

# The paper recipe of each model (rdinet_tf.models.MODELS[name].paper_recipe, and its dataset): the reference
# training script's settings.
PAPER = {
    "smallcnn": {"dataset": "mnist", "batch_size": 256, "learning_rate": 0.033, "iterations": 13_100, "eps": 0.3,
                 "step_size": 0.01, "train_attack_steps": 40, "eval_attack_steps": 40},
    "resnet38": {"dataset": "cifar10", "batch_size": 128, "learning_rate": 0.1, "iterations": 64_000,
                 "eps": 8 / 255, "step_size": 2 / 255, "train_attack_steps": 10, "eval_attack_steps": 20},
    "mobilenetv2": {"dataset": "cifar10", "batch_size": 128, "learning_rate": 0.1, "iterations": 64_000,
                    "eps": 8 / 255, "step_size": 2 / 255, "train_attack_steps": 10, "eval_attack_steps": 20},
}
# The fast recipe of each model (rdinet_tf.models.MODELS[name].fast_recipe).
FAST = {
    "smallcnn": {"epochs": 10, "batch_size": 128, "peak_learning_rate": 0.05, "attack": "fast_fgsm"},
    "resnet38": {"epochs": 15, "batch_size": 128, "peak_learning_rate": 0.2, "attack": "n_fgsm"},
    "mobilenetv2": {"epochs": 15, "batch_size": 128, "peak_learning_rate": 0.1, "attack": "n_fgsm"},
}


def number(value, of_255=False):
    """``value`` as a person writes it: the shortest form, or ``k/255`` for a pixel radius (``of_255``)."""
    if of_255 and 0 < value < 1 and round(value * 255, 9) == round(value * 255):
        return f"{round(value * 255)}/255"
    return value if isinstance(value, str) else f"{value:,}" if isinstance(value, int) else f"{value:g}"


def per_model(table, key, models=MODELS):
    """``table[model][key]`` for each model, equal values together: "0.3 for smallcnn, 8/255 for resnet38 and
    mobilenetv2" (one value for all: just the value)."""
    groups = {}
    for model in models:
        groups.setdefault(number(table[model][key], of_255=key in ("eps", "step_size")), []).append(model)
    if len(groups) == 1:
        return next(iter(groups))
    return ", ".join(f"{value} for {' and '.join(names)}" for value, names in groups.items())
