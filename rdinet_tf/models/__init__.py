"""The trainable multi-exit models: the reference models by name (:mod:`.registry`), ``build(name)`` for one of
them, ``attach_exits`` for a user's own backbone, ``load`` for a saved ``.keras`` file (:mod:`.multi_exit`), and
the authors' PyTorch checkpoints (:mod:`.torch_checkpoint`) and their architectures in PyTorch
(:mod:`.torch_reference`); both need torch."""

from rdinet_tf.models.multi_exit import (MultiExitModel, attach_exits, build, check_finite_weights, cifar_resnet,
                                         load)
from rdinet_tf.models.registry import MODELS, CheckpointLayout, ModelSpec, spec, spec_for_images

__all__ = ["CheckpointLayout", "MODELS", "ModelSpec", "MultiExitModel", "attach_exits", "build",
           "check_finite_weights", "cifar_resnet", "load", "spec", "spec_for_images"]
