"""Multi-exit backbones: ``build(name)`` returns a :class:`MultiExitModel`."""

from rdinet_tf.errors import InputError
from rdinet_tf.models.mobilenetv2 import mobilenetv2
from rdinet_tf.models.multi_exit import MultiExitModel, attach_exits, chain, exit_name
from rdinet_tf.models.resnet import cifar_resnet, resnet38
from rdinet_tf.models.smallcnn import smallcnn

# name -> (builder, input shape it was designed for)
MODELS = {
    "smallcnn": (smallcnn, (28, 28, 1)),
    "resnet38": (resnet38, (32, 32, 3)),
    "mobilenetv2": (mobilenetv2, (32, 32, 3)),
}


def build(name, num_classes=10, **kwargs):
    """Build the reference multi-exit model ``name`` ("smallcnn", "resnet38", "mobilenetv2")."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name][0](num_classes=num_classes, **kwargs)


__all__ = ["MODELS", "MultiExitModel", "attach_exits", "build", "chain", "cifar_resnet",
           "exit_name", "mobilenetv2", "resnet38", "smallcnn"]
