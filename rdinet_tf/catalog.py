"""The package's named choices and the reference models' recipe values, as plain Python.

The single source of each: the library builds on these (``data``, ``training``,
``models.registry``, ``export``, ``experiments``) and the command lines read them
to build their parsers without loading TensorFlow (``--help`` stays instant).
"""

#: The datasets ``data.load`` knows, with their image shape (HWC) and number of classes (``digits`` is
#: embedded: no download).
DATASETS = {"mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10), "digits": ((28, 28, 1), 10)}
#: Environment variable naming a local data directory (the same role as ``--data-dir``).
DATA_DIR_ENV = "RDINET_DATA_DIR"

#: The reference models and the dataset each was designed for.
MODEL_DATASETS = {"smallcnn": "mnist", "resnet38": "cifar10", "mobilenetv2": "cifar10"}
MODELS = tuple(MODEL_DATASETS)

#: The kinds of training recipe (``training.PaperRecipe``, ``training.FastRecipe``).
RECIPES = ("paper", "fast")
#: The defenses that attack the exit policy itself (its thresholds followed during training).
POLICY_DEFENSES = ("routing", "exit_hijack", "worst_case")
#: What the training attack targets (``MultiExitModel.compile(defense=...)``).
DEFENSES = ("none", "main", "average", "max_average", *POLICY_DEFENSES)
#: Training attacks by command-line name.
TRAINING_ATTACKS = ("pgd", "fast_fgsm", "n_fgsm")
#: Evaluation attacks by command-line name.
EVALUATION_ATTACKS = ("pgd", "fgsm", "wrm", "noise")
#: How the exit thresholds are chosen after training (``none``: no early exit).
CALIBRATIONS = ("equal_share", "target_cost", "robust", "none")
#: Validation images the robust calibration attacks by default.
ROBUST_CALIBRATION_SAMPLES = 1000
#: Training precisions (Keras dtype policies).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
#: Distribution strategies of a training run.
STRATEGIES = ("none", "mirrored", "multi_worker")
#: Quantizations of an exported LiteRT bundle (weights and activations).
QUANTIZATIONS = ("float32", "float16", "dynamic_int8", "int8")

_CIFAR10_PAPER = dict(batch_size=128, learning_rate=0.1, weight_decay=1e-4, iterations=64_000,
                      decay_at=(32_000, 48_000), eps=8 / 255, step_size=2 / 255, train_attack_steps=10,
                      eval_attack_steps=20, augment=True)
#: Each reference model's paper recipe (the authors' training script): the fields of ``training.PaperRecipe``.
PAPER_RECIPES = {
    "smallcnn": dict(batch_size=256, learning_rate=0.033, weight_decay=5e-4, iterations=13_100,
                     decay_at=(11_700, 12_900), eps=0.3, step_size=0.01, train_attack_steps=40,
                     eval_attack_steps=40, augment=False),
    "resnet38": _CIFAR10_PAPER,
    "mobilenetv2": _CIFAR10_PAPER,
}
#: Each reference model's fast recipe: the fields of ``training.FastRecipe``.
FAST_RECIPES = {
    "smallcnn": dict(epochs=10, batch_size=128, peak_learning_rate=0.05, weight_decay=5e-4, attack="fast_fgsm"),
    "resnet38": dict(epochs=15, batch_size=128, peak_learning_rate=0.2, weight_decay=5e-4, attack="n_fgsm"),
    "mobilenetv2": dict(epochs=15, batch_size=128, peak_learning_rate=0.1, weight_decay=5e-4, attack="n_fgsm"),
}
