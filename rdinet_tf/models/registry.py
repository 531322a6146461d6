"""The reference models by name: one :class:`ModelSpec` per name in :data:`MODELS`.

A spec holds everything the package knows about a reference model: the
architecture builder, the input shape and dataset it was designed for, the
paper's training recipe, the fast recipe, and the layout of the authors'
PyTorch checkpoint. ``models.build(name)``, the command lines' ``--model``
choices, the checkpoint import and the recipe lookups all read it.
"""

import dataclasses
from typing import Callable

from rdinet_lite.errors import InputError
from rdinet_tf.architecture import mobilenetv2, resnet38, smallcnn
from rdinet_tf.catalog import DATASETS, FAST_RECIPES, MODEL_DATASETS, PAPER_RECIPES
from rdinet_tf.training.recipes import FastRecipe, PaperRecipe


@dataclasses.dataclass(frozen=True)
class CheckpointLayout:
    """How our layer names map to the authors' PyTorch module names (see :mod:`.torch_checkpoint`).

    ``module_names``: ``(regex, replacement)`` rules; the first rule that matches
    the whole layer name gives the module name. ``unused_tensors``: checkpoint
    tensors that carry no weight of the forward pass.
    """

    module_names: tuple
    unused_tensors: tuple = ()


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A reference model: its architecture, data, training recipes and checkpoint layout."""

    name: str
    builder: Callable  # (num_classes=..., input_shape=..., **kwargs) -> MultiExitNetwork
    input_shape: tuple
    dataset: str
    paper_recipe: PaperRecipe
    fast_recipe: FastRecipe
    checkpoint_layout: CheckpointLayout


def _spec(name, builder, checkpoint_layout):
    """``name``'s spec: its dataset, input shape and recipes from :mod:`rdinet_tf.catalog`."""
    dataset = MODEL_DATASETS[name]
    return ModelSpec(name, builder, DATASETS[dataset][0], dataset, PaperRecipe(**PAPER_RECIPES[name]),
                     FastRecipe(**FAST_RECIPES[name]), checkpoint_layout)


MODELS = {spec.name: spec for spec in (
    _spec(
        "smallcnn", smallcnn,
        CheckpointLayout((
            (r"(conv\d|fc\d)", r"\1"),
            (r"exit1_conv", "branch_layer1.0"),
            (r"exit1_fc1", "branch_layer1.3"),
            (r"exit1_fc2", "branch_layer1.5"),
            (r"exit1_fc3", "branch_layer1.6"),
            (r"exit2_fc1", "branch_layer2.2"),
            (r"exit2_fc2", "branch_layer2.4"),
            (r"exit2_fc3", "branch_layer2.5"),
        ))),
    _spec(
        "resnet38", resnet38,
        CheckpointLayout((
            (r"(conv1|bn1)", r"\1"),
            (r"fc_fc", "fc"),
            (r"(group\d_layer\d+)_(conv\d|bn\d)", r"\1.\2"),
            (r"(group\d_layer\d+)_downsample_(\d)", r"\1.downsample.\2"),
            (r"exit([12])_conv1", r"branch_layer\1.1"),
            (r"exit([12])_bn1", r"branch_layer\1.2"),
            (r"exit([12])_conv2", r"branch_layer\1.5"),
            (r"exit([12])_bn2", r"branch_layer\1.6"),
            (r"exit([12])_fc", r"branch_layer\1.9"),
            (r"exit([34])_block_(conv\d|bn\d)", r"branch_layer\1.1.\2"),
            (r"exit([34])_fc", r"branch_layer\1.4"),
            (r"exit([56])_fc", r"branch_layer\1.2"),
        ))),
    _spec(
        "mobilenetv2", mobilenetv2,
        CheckpointLayout((
            (r"conv1", "layer1"),
            (r"bn1", "bn1"),
            (r"layer19_conv", "layer19"),
            (r"layer19_bn", "bn2"),
            (r"fc_fc", "linear"),
            (r"(layer\d+)_(conv\d|bn\d)", r"\1.\2"),
            (r"(layer\d+)_shortcut_(\d)", r"\1.shortcut.\2"),
            (r"exit1_block1_(conv\d|bn\d)", r"branch_layer1.0.\1"),
            (r"exit1_bn1", "branch_layer1.1"),
            (r"exit1_block2_(conv\d|bn\d)", r"branch_layer1.3.\1"),
            (r"exit1_bn2", "branch_layer1.4"),
            (r"exit1_fc", "branch_layer1.7"),
            (r"exit2_block1_(conv\d|bn\d)", r"branch_layer2.0.\1"),
            (r"exit2_fc", "branch_layer2.3"),
            (r"exit([3-6])_fc", r"branch_layer\1.2"),
        ), unused_tensors=("conv2.weight",))),
)}


def spec(name):
    """The :class:`ModelSpec` of the reference model ``name``, with one clear error for an unknown name."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]


def spec_for_images(image_shape):
    """The spec whose attack settings fit images of ``image_shape``: SmallCNN's for one channel (MNIST),
    ResNet-38's otherwise (CIFAR-10)."""
    return MODELS["smallcnn" if tuple(image_shape)[-1] == 1 else "resnet38"]
