"""The trainable multi-exit models: ``build(name)`` for a reference architecture, ``attach_exits`` for a
user's own backbone, ``load`` for a saved ``.keras`` file (:mod:`.presets`), the authors' PyTorch
checkpoints (:mod:`.torch_checkpoint`) and their architectures in PyTorch (:mod:`.torch_reference`); both
need torch."""

from rdinet_tf.models.presets import INPUT_SHAPES, MultiExitModel, attach_exits, build, check_finite_weights, cifar_resnet, load

__all__ = ["INPUT_SHAPES", "MultiExitModel", "attach_exits", "build", "check_finite_weights", "cifar_resnet", "load"]
