"""CIFAR MobileNetV2 with 7 exits (the reference architecture)."""

from rdinet_tf.architecture.blocks import batch_norm, classifier, conv, inverted_residual, relu
from rdinet_tf.architecture.network import chain

# (expansion, out channels, blocks, first stride): blocks are numbered layer2..layer18.
CONFIG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Side exits attach after these layer numbers (the stem is layer1).
EXIT_LAYERS = (2, 5, 8, 10, 13, 16)


def _block_specs():
    """[(layer number, expansion, out channels, stride)] for layer2..layer18."""
    specs, number = [], 2
    for expansion, out, count, first_stride in CONFIG:
        for i in range(count):
            specs.append((number, expansion, out, first_stride if i == 0 else 1))
            number += 1
    return specs


def _head(x, exit_index, num_classes):
    prefix = f"exit{exit_index + 1}"
    if exit_index == 0:
        x = inverted_residual(x, 32, 6, 2, f"{prefix}_block1")
        x = relu(batch_norm(x, f"{prefix}_bn1"), f"{prefix}_relu1")
        x = batch_norm(inverted_residual(x, 64, 6, 2, f"{prefix}_block2"), f"{prefix}_bn2")
    elif exit_index == 1:
        x = inverted_residual(x, 32, 6, 2, f"{prefix}_block1")
    return classifier(x, num_classes, prefix)


def _stage(x, specs, with_stem, with_top):
    if with_stem:
        x = relu(batch_norm(conv(x, 32, 3, 1, 1, name="conv1"), "bn1"), "relu1")
    for number, expansion, out, stride in specs:
        x = inverted_residual(x, out, expansion, stride, f"layer{number}")
    if with_top:
        x = relu(batch_norm(conv(x, 1280, 1, name="layer19_conv"), "layer19_bn"), "layer19_relu")
    return x


def mobilenetv2(num_classes=10, input_shape=(32, 32, 3), name="mobilenetv2"):
    """The reference RDI MobileNetV2 (CIFAR variant, stride-1 stem)."""
    specs = _block_specs()
    bounds = [1] + list(EXIT_LAYERS) + [specs[-1][0]]
    builders = []
    for k in range(len(bounds) - 1):
        stage_specs = [s for s in specs if bounds[k] < s[0] <= bounds[k + 1]]
        is_last = k == len(bounds) - 2
        builders.append((
            lambda x, ss=stage_specs, first=k == 0, last=is_last: _stage(x, ss, first, last),
            (lambda x: classifier(x, num_classes, "fc")) if is_last
            else lambda x, e=k: _head(x, e, num_classes),
        ))
    return chain(builders, input_shape, name)
