"""The trainable multi-exit models: the reference backbones and a user's own, as :class:`MultiExitModel`.

``build(name)`` gives a reference architecture of :mod:`rdinet_tf.architecture`
ready for ``compile(defense=..., attack=...)`` and ``fit``; ``attach_exits``
does the same for a user's functional Keras backbone; ``load`` reads a saved
``.keras`` file with one clear error for a wrong path.
"""

from pathlib import Path

import keras

from rdinet_tf import architecture
from rdinet_tf.architecture import exit_name
from rdinet_tf.errors import InputError
from rdinet_tf.training import MultiExitModel

# name -> input shape each reference model was designed for
INPUT_SHAPES = {name: shape for name, (_, shape) in architecture.BACKBONES.items()}


def build(name, num_classes=10, **kwargs):
    """The reference multi-exit model ``name`` ("smallcnn", "resnet38", "mobilenetv2")."""
    if name not in architecture.BACKBONES:
        raise InputError(f"unknown model {name!r}; choose one of {sorted(architecture.BACKBONES)}")
    builder, _ = architecture.BACKBONES[name]
    return MultiExitModel.from_network(builder(num_classes=num_classes, **kwargs))


def cifar_resnet(depth, num_classes=10, **kwargs):
    """A CIFAR ResNet of ``depth`` (6n + 2) with side exits (see :func:`rdinet_tf.architecture.cifar_resnet`)."""
    return MultiExitModel.from_network(architecture.cifar_resnet(depth, num_classes=num_classes, **kwargs))


def attach_exits(backbone, attach_layers, head_builder, final_head=None, name=None):
    """Side exits on a user's functional Keras backbone (see :func:`rdinet_tf.architecture.attach_exits`)."""
    return MultiExitModel.from_network(
        architecture.attach_exits(backbone, attach_layers, head_builder, final_head, name))


def load(path):
    """``keras.models.load_model(path)`` for a ``.keras`` model file, with one clear error for a wrong path."""
    path = Path(path)
    if path.suffix != ".keras" or not path.is_file():
        raise InputError(f"no .keras model file at {path}; pass the model.keras written by "
                         "`rdinet-train --out DIR` (DIR/model.keras)")
    return keras.models.load_model(path)


__all__ = ["INPUT_SHAPES", "MultiExitModel", "attach_exits", "build", "cifar_resnet", "exit_name", "load"]
