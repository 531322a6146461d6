"""Architecture: multi-exit networks made of stage and head sub-models.

The reference backbones (SmallCNN, CIFAR ResNets, MobileNetV2) and
``attach_exits`` for a user's own Keras backbone all return a
:class:`MultiExitNetwork`; :mod:`rdinet_tf.models` makes them trainable.
"""

from rdinet_tf.architecture.mobilenetv2 import mobilenetv2
from rdinet_tf.architecture.network import MultiExitNetwork, attach_exits, chain, exit_name
from rdinet_tf.architecture.resnet import cifar_resnet, resnet38
from rdinet_tf.architecture.smallcnn import smallcnn

# name -> (builder, input shape it was designed for)
BACKBONES = {
    "smallcnn": (smallcnn, (28, 28, 1)),
    "resnet38": (resnet38, (32, 32, 3)),
    "mobilenetv2": (mobilenetv2, (32, 32, 3)),
}

__all__ = ["BACKBONES", "MultiExitNetwork", "attach_exits", "chain", "cifar_resnet", "exit_name",
           "mobilenetv2", "resnet38", "smallcnn"]
