"""Architecture: multi-exit networks made of stage and head sub-models.

The reference backbones (SmallCNN, CIFAR ResNets, MobileNetV2) and
``attach_exits`` for a user's own Keras backbone all return a
:class:`MultiExitNetwork`; :mod:`rdinet_tf.models` makes them trainable and
names the reference ones (:mod:`rdinet_tf.models.registry`).
"""

from rdinet_tf.architecture.mobilenetv2 import mobilenetv2
from rdinet_tf.architecture.network import MultiExitNetwork, attach_exits, chain, exit_name
from rdinet_tf.architecture.resnet import cifar_resnet, resnet38
from rdinet_tf.architecture.smallcnn import smallcnn

__all__ = ["MultiExitNetwork", "attach_exits", "chain", "cifar_resnet", "exit_name", "mobilenetv2", "resnet38",
           "smallcnn"]
