"""Layer builders shared by the reference backbones, matching PyTorch semantics.

PyTorch pads ``p`` pixels on every side; Keras ``"same"`` pads (0, 1) for a
stride-2 conv on an even size. Convs here pad explicitly whenever the two
differ, so outputs (and imported checkpoints) match the reference exactly.
BatchNorm uses PyTorch's epsilon 1e-5 and momentum 0.1 (Keras momentum 0.9).
"""

import keras
from keras import layers

# Initializers are made afresh for every layer: a Keras initializer instance draws its seed
# once, when it is made, so a shared instance would give every layer of one shape the same
# weights, and one made at import would not follow keras.utils.set_random_seed.


def conv_init(fan="fan_out"):
    """Kaiming normal: normal(0, sqrt(2 / (kh * kw * channels on the ``fan`` side))), the reference's conv init."""
    return keras.initializers.VarianceScaling(2.0, fan, "untruncated_normal")


def dense_init():
    """PyTorch's default Linear init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def conv(x, filters, kernel, stride=1, padding=0, use_bias=False, name=None,
         depthwise=False, fan="fan_out"):
    """A conv with PyTorch's symmetric zero padding ``padding`` on every side, Kaiming-initialised on ``fan``."""
    if padding and (stride > 1 or padding != kernel // 2):
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        mode = "valid"
    else:
        mode = "same" if padding else "valid"
    if depthwise:
        return layers.DepthwiseConv2D(kernel, stride, mode, use_bias=use_bias, name=name,
                                      depthwise_initializer=conv_init(fan))(x)
    return layers.Conv2D(filters, kernel, stride, mode, use_bias=use_bias, name=name,
                         kernel_initializer=conv_init(fan))(x)


def batch_norm(x, name):
    return layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)


def relu(x, name):
    return layers.ReLU(name=name)(x)


def basic_block(x, filters, stride, name):
    """ResNet BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""
    shortcut = x
    y = relu(batch_norm(conv(x, filters, 3, stride, 1, name=f"{name}_conv1"), f"{name}_bn1"),
             f"{name}_relu1")
    y = batch_norm(conv(y, filters, 3, 1, 1, name=f"{name}_conv2"), f"{name}_bn2")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv(x, filters, 1, stride, name=f"{name}_downsample_0")
        shortcut = batch_norm(shortcut, f"{name}_downsample_1")
    return relu(layers.Add(name=f"{name}_add")([y, shortcut]), f"{name}_relu2")


def inverted_residual(x, filters, expansion, stride, name):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; shortcut only at stride 1."""
    channels = x.shape[-1]
    y = relu(batch_norm(conv(x, expansion * channels, 1, name=f"{name}_conv1"), f"{name}_bn1"),
             f"{name}_relu1")
    y = conv(y, None, 3, stride, 1, name=f"{name}_conv2", depthwise=True)
    y = relu(batch_norm(y, f"{name}_bn2"), f"{name}_relu2")
    y = batch_norm(conv(y, filters, 1, name=f"{name}_conv3"), f"{name}_bn3")
    if stride != 1:
        return y
    if channels != filters:
        x = batch_norm(conv(x, filters, 1, name=f"{name}_shortcut_0"), f"{name}_shortcut_1")
    return layers.Add(name=f"{name}_add")([y, x])


def classifier(x, num_classes, name, pool=True):
    """Global average pool (optional) and a dense layer giving the logits."""
    if pool:
        x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return layers.Dense(num_classes, kernel_initializer=dense_init(), name=f"{name}_fc")(x)
