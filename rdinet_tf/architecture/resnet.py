"""CIFAR ResNets (depth 6n+2) with side exits; ResNet-38 is the reference (spec 4.2)."""

from keras import layers

from rdinet_lite.errors import InputError
from rdinet_tf.architecture.blocks import basic_block, batch_norm, classifier, conv, relu
from rdinet_tf.architecture.network import chain

GROUP_WIDTHS = (16, 32, 64)


def _group0_head(x, prefix, num_classes):
    """maxpool -> conv 5x5 64 -> BN -> ReLU -> maxpool -> conv 3x3 32 -> BN -> GAP -> fc."""
    x = layers.MaxPooling2D(2, name=f"{prefix}_pool1")(x)
    x = relu(batch_norm(conv(x, 64, 5, 1, 2, name=f"{prefix}_conv1"), f"{prefix}_bn1"),
             f"{prefix}_relu1")
    x = layers.MaxPooling2D(2, name=f"{prefix}_pool2")(x)
    x = batch_norm(conv(x, 32, 3, 1, 1, name=f"{prefix}_conv2"), f"{prefix}_bn2")
    return classifier(x, num_classes, prefix)


def _group1_head(x, prefix, num_classes):
    """maxpool -> BasicBlock(32, 32) -> GAP -> fc."""
    x = layers.MaxPooling2D(2, name=f"{prefix}_pool1")(x)
    return classifier(basic_block(x, 32, 1, f"{prefix}_block"), num_classes, prefix)


def _group2_head(x, prefix, num_classes):
    return classifier(x, num_classes, prefix)


_GROUP_HEADS = (_group0_head, _group1_head, _group2_head)


def exit_blocks(blocks_per_group):
    """0-based block indices of each group after which a side exit is attached."""
    return sorted({int(blocks_per_group / 4), int(3 * blocks_per_group / 4)})


def cifar_resnet(depth=38, num_classes=10, input_shape=(32, 32, 3), name=None):
    """CIFAR ResNet of ``depth`` = 6n+2 with exits after blocks n/4 and 3n/4 of each group."""
    if depth < 8 or (depth - 2) % 6:
        raise InputError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 38, ...); got {depth}")
    blocks_per_group = (depth - 2) // 6
    # The network as a flat list of (group, block); a side exit follows the cut points.
    blocks = [(g, b) for g in range(3) for b in range(blocks_per_group)]
    cuts = [i for i, (g, b) in enumerate(blocks) if b in exit_blocks(blocks_per_group)]
    bounds = [-1] + cuts + [len(blocks) - 1]
    builders = []
    for k in range(len(bounds) - 1):
        segment_blocks = blocks[bounds[k] + 1: bounds[k + 1] + 1]
        is_last = k == len(bounds) - 2
        head_group = blocks[bounds[k + 1]][0]
        builders.append((
            lambda x, seg=segment_blocks, first=k == 0: _run_blocks(x, seg, first),
            (lambda x: classifier(x, num_classes, "fc")) if is_last
            else lambda x, g=head_group, p=f"exit{k + 1}": _GROUP_HEADS[g](x, p, num_classes),
        ))
    return chain(builders, input_shape, name or f"resnet{depth}")


def _run_blocks(x, group_blocks, with_stem):
    if with_stem:
        x = relu(batch_norm(conv(x, 16, 3, 1, 1, name="conv1"), "bn1"), "relu")
    for g, b in group_blocks:
        stride = 2 if g > 0 and b == 0 else 1
        x = basic_block(x, GROUP_WIDTHS[g], stride, f"group{g}_layer{b}")
    return x


def resnet38(num_classes=10, input_shape=(32, 32, 3), name="resnet38"):
    """The reference RDI ResNet-38: 7 exits."""
    return cifar_resnet(38, num_classes, input_shape, name)
