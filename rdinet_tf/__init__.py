"""rdinet_tf: robust dynamic inference networks (RDI-Nets) in TensorFlow/Keras.

The front door, ``import rdinet_tf as rdi``::

    splits = rdi.data.load("mnist", data_dir="path/to/data")
    model = rdi.build("smallcnn")
    model.compile(optimizer=..., defense="max_average", attack=rdi.NFGSM(0.3))
    model.fit(...)
    model.exit_policy = rdi.ExitPolicy.calibrate(model, splits.x_val)
    print(rdi.robustness_report(model, splits.x_test, splits.y_test, [rdi.PGD(0.3, 0.01, 40)]).table())
    rdi.export_tflite(model, "bundle/")

The subpackages follow the data flow; each imports only those before it and the device package
``rdinet_lite`` (numpy and ai-edge-litert only: the runner, latency kit and the numpy foundations):

``data`` -> ``architecture`` (multi-exit networks, their cost) -> ``exits`` (entropy, routing, thresholds)
-> ``attacks`` -> ``training`` (``MultiExitModel``, recipes, callbacks) -> ``models`` (the reference
models by name, checkpoints) -> ``evaluation`` -> ``baselines`` (the pruned single-exit network) -> ``export`` (TFLite,
SavedModel) -> ``experiments`` (a run: train, calibrate, evaluate, save) -> ``cli``.

Importing rdinet_tf registers the model, policy and attack classes, so that
``keras.models.load_model("model.keras")`` works after it.
"""

from rdinet_lite import EarlyExitRunner, InputError
from rdinet_tf import attacks, data, evaluation, exits, export, models, training
from rdinet_tf.architecture import MultiExitNetwork
from rdinet_tf.architecture.flops import cost_table, exit_costs
from rdinet_tf.attacks import NFGSM, PGD, AutoAttack, fast_fgsm, fgsm, generate
from rdinet_tf.evaluation import calibrate_robust, robustness_report, tradeoff
from rdinet_tf.exits import ExitPolicy
from rdinet_tf.export import export_saved_model, export_tflite
from rdinet_tf.models import MODELS, attach_exits, build, load
from rdinet_tf.training import (CatastrophicOverfittingGuard, FollowThresholds, MultiExitModel, NeoKD, OneCycle,
                                ReferenceSGD, guard_attack, set_precision)

__version__ = "0.1.0"
__all__ = ["AutoAttack", "CatastrophicOverfittingGuard", "EarlyExitRunner", "ExitPolicy", "FollowThresholds",
           "InputError", "MODELS", "MultiExitModel", "MultiExitNetwork", "NFGSM", "NeoKD", "OneCycle",
           "PGD", "ReferenceSGD", "attach_exits", "attacks", "build", "calibrate_robust", "cost_table", "data",
           "evaluation", "exit_costs", "exits", "export", "export_saved_model", "export_tflite", "fast_fgsm", "fgsm",
           "generate", "guard_attack", "load", "models", "robustness_report", "set_precision", "tradeoff",
           "training"]
