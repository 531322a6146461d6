"""The trainable multi-exit models: the reference backbones and a user's own, as :class:`MultiExitModel`.

``build(name)`` gives a reference model of :mod:`.registry` ready for
``compile(defense=..., attack=...)`` and ``fit``; ``attach_exits`` does the
same for a user's functional Keras backbone; ``load`` reads a saved ``.keras``
file with one clear error for a wrong path.
"""

import zipfile
from pathlib import Path

import keras

from rdinet_tf import architecture
from rdinet_tf.architecture import exit_name
from rdinet_lite.errors import InputError
from rdinet_tf.models import registry
from rdinet_tf.training import MultiExitModel, nonfinite_weight


def build(name, num_classes=10, **kwargs):
    """The reference multi-exit model ``name``, one of :data:`.registry.MODELS` ("smallcnn", "resnet38",
    "mobilenetv2"), for images of the registered input shape unless ``input_shape=`` says otherwise."""
    spec = registry.spec(name)
    kwargs.setdefault("input_shape", spec.input_shape)
    return MultiExitModel.from_network(spec.builder(num_classes=num_classes, **kwargs))


def cifar_resnet(depth, num_classes=10, **kwargs):
    """A CIFAR ResNet of ``depth`` (6n + 2) with side exits (see :func:`rdinet_tf.architecture.cifar_resnet`)."""
    return MultiExitModel.from_network(architecture.cifar_resnet(depth, num_classes=num_classes, **kwargs))


def attach_exits(backbone, attach_layers, head_builder, final_head=None, name=None):
    """Side exits on a user's functional Keras backbone (see :func:`rdinet_tf.architecture.attach_exits`)."""
    return MultiExitModel.from_network(
        architecture.attach_exits(backbone, attach_layers, head_builder, final_head, name))


def load(path):
    """The :class:`MultiExitModel` saved at ``path`` (a ``.keras`` file), with one clear error for anything else."""
    path = Path(path)
    remake = "pass the model.keras written by `rdinet-train --out DIR` (DIR/model.keras) or by model.save"
    if path.suffix != ".keras" or not path.is_file():
        raise InputError(f"no .keras model file at {path}; {remake}")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a .keras archive (truncated or not a Keras file); {remake}")
    with zipfile.ZipFile(path) as archive:
        missing = sorted({"config.json", "model.weights.h5"} - set(archive.namelist()))
    if missing:
        raise InputError(f"{path} is not a complete .keras file (it lacks {', '.join(missing)}); {remake}")
    try:
        model = keras.models.load_model(path)  # safe mode: a Lambda or unknown class is refused, never run
    except MemoryError:
        raise InputError(f"{path} is too large to load (out of memory); {remake}") from None
    except RecursionError:
        raise InputError(f"{path} cannot be loaded: its config is nested too deeply (crafted or corrupt); "
                         f"{remake}") from None
    except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a bad file
        raise InputError(f"{path} cannot be loaded ({type(error).__name__}: {_first_line(error)}); {remake}") \
            from error
    if not isinstance(model, MultiExitModel):
        raise InputError(f"{path} holds a {type(model).__name__}, not an rdinet_tf multi-exit model; build one "
                         "with rdinet_tf.models.build or attach_exits, or train one with rdinet-train")
    try:
        if not (model.num_exits >= 1 and len(model.stages) == len(model.heads) == model.num_exits
                and all(isinstance(m, keras.Model) for m in (*model.stages, *model.heads))):
            raise ValueError("its stages and heads do not form a multi-exit network")
        model.image_shape, model.num_classes  # noqa: B018 - derived from the layers; fails on a bad structure
    except Exception as error:  # noqa: BLE001
        raise InputError(f"{path} is not a valid multi-exit model ({type(error).__name__}: {_first_line(error)}); "
                         f"{remake}") from error
    check_finite_weights(model, str(path), "the model is from a diverged training or corrupt; retrain it with a "
                         "lower --lr (rdinet-train --restart)")
    return model


def _first_line(error, limit=200):
    """The start of an error message: Keras puts whole configs in some (tens of KB)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def check_finite_weights(model, what, fix):
    """One clear error naming ``what`` if any weight of ``model`` is NaN or infinite."""
    path = nonfinite_weight(model)
    if path is not None:
        raise InputError(f"{what} holds NaN or infinite weights (in {path}): {fix}")


__all__ = ["MultiExitModel", "attach_exits", "build", "check_finite_weights", "cifar_resnet", "exit_name", "load"]
