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

``catalog`` (the named choices and recipe values, plain Python) -> ``data`` -> ``architecture`` (multi-exit
networks, their cost) -> ``exits`` (entropy, routing, thresholds) -> ``attacks`` -> ``training``
(``MultiExitModel``, recipes, callbacks) -> ``models`` (the reference models by name, checkpoints) -> ``evaluation``
-> ``baselines`` (the pruned single-exit network) -> ``export`` (TFLite, SavedModel) -> ``experiments`` (a run:
train, calibrate, evaluate, save) -> ``cli``.

``import rdinet_tf`` alone loads no TensorFlow (a command line prints its ``--help`` at once); the library
loads on the first use of one of its names, or at the import where Keras is imported already. Loading it
registers the model, policy and attack classes, so that ``keras.models.load_model("model.keras")`` works
after ``import keras, rdinet_tf`` (or use ``rdi.load("model.keras")``, which also checks the file).
"""

import importlib
import sys

# The public names and the module each comes from, imported on first use (PEP 562) and all at once.
_EXPORTS = {
    "rdinet_lite": ["EarlyExitRunner", "InputError"],
    "rdinet_tf.architecture": ["MultiExitNetwork"],
    "rdinet_tf.architecture.flops": ["cost_table", "exit_costs"],
    "rdinet_tf.attacks": ["NFGSM", "PGD", "AutoAttack", "fast_fgsm", "fgsm", "generate"],
    "rdinet_tf.evaluation": ["calibrate_robust", "robustness_report", "tradeoff"],
    "rdinet_tf.exits": ["ExitPolicy"],
    "rdinet_tf.export": ["export_saved_model", "export_tflite"],
    "rdinet_tf.models": ["MODELS", "attach_exits", "build", "load"],
    "rdinet_tf.training": ["CatastrophicOverfittingGuard", "FollowThresholds", "MultiExitModel", "NeoKD", "OneCycle",
                           "ReferenceSGD", "guard_attack", "set_precision"],
}
_SUBPACKAGES = ["attacks", "data", "evaluation", "exits", "export", "models", "training"]
_loaded = False


def _load():
    """Import the library: every subpackage and public name (which registers the Keras classes)."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # first: the library's own ``from rdinet_tf import data`` comes back here while it loads
    try:
        module = sys.modules[__name__]
        for name in _SUBPACKAGES:
            importlib.import_module(f"{__name__}.{name}")
        for source, names in _EXPORTS.items():
            loaded = importlib.import_module(source)
            for name in names:
                setattr(module, name, getattr(loaded, name))
    except BaseException:
        _loaded = False
        raise


def __getattr__(name):
    if name in _SUBPACKAGES:
        # Only the subpackage (and what it imports): the library's own ``from rdinet_tf import attacks`` comes
        # here in the middle of importing another subpackage, where loading everything would meet it half-made.
        return importlib.import_module(f"{__name__}.{name}")
    if name in __all__:
        _load()
        if name in globals():  # not yet while the library loads
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})


__version__ = "0.1.0"
__all__ = sorted({*_SUBPACKAGES, *(name for names in _EXPORTS.values() for name in names)})

# Where Keras is imported already the library costs little more, and keras.models.load_model finds its classes.
if "keras" in sys.modules or "tensorflow" in sys.modules:
    _load()
