"""SmallCNN for MNIST with 3 exits (the reference architecture)."""

from keras import layers

from rdinet_tf.architecture.blocks import conv, dense_init
from rdinet_tf.architecture.network import chain

def _conv_relu(x, filters, name, stride=1):
    """Conv with Kaiming normal fan-in init (PyTorch's kaiming_normal_ default, the SmallCNN conv init) + ReLU."""
    x = conv(x, filters, 3, stride, use_bias=True, name=name, fan="fan_in")
    return layers.ReLU(name=f"{name}_relu")(x)


def _dense(x, units, name, **kwargs):
    return layers.Dense(units, kernel_initializer=dense_init(), name=name, **kwargs)(x)


def _side_head(x, prefix, num_classes):
    """Flatten -> fc 200 -> dropout -> fc 200 -> fc classes, no nonlinearity between."""
    x = layers.Flatten(name=f"{prefix}_flatten")(x)
    x = layers.Dropout(0.5, name=f"{prefix}_dropout")(_dense(x, 200, f"{prefix}_fc1"))
    return _dense(_dense(x, 200, f"{prefix}_fc2"), num_classes, f"{prefix}_fc3")


def _exit_1(x, num_classes):
    x = conv(x, 16, 3, 2, use_bias=True, name="exit1_conv", fan="fan_in")
    return _side_head(layers.MaxPooling2D(2, name="exit1_pool")(x), "exit1", num_classes)


def _exit_2(x, num_classes):
    return _side_head(layers.MaxPooling2D(2, name="exit2_pool")(x), "exit2", num_classes)


def _stage_2(x):
    x = layers.MaxPooling2D(2, name="pool1")(_conv_relu(x, 32, "conv2"))
    return _conv_relu(x, 64, "conv3")


def _stage_3(x):
    return layers.MaxPooling2D(2, name="pool2")(_conv_relu(x, 64, "conv4"))


def _final_exit(x, num_classes):
    x = layers.Flatten(name="flatten")(x)
    x = _dense(x, 200, "fc1", activation="relu")
    x = _dense(layers.Dropout(0.5, name="dropout")(x), 200, "fc2", activation="relu")
    return layers.Dense(num_classes, kernel_initializer="zeros", name="fc3")(x)


def smallcnn(num_classes=10, input_shape=(28, 28, 1), name="smallcnn"):
    """RDI-SmallCNN: exits after conv1, after conv3, and the backbone's fc3."""
    return chain(
        [
            (lambda x: _conv_relu(x, 32, "conv1"), lambda x: _exit_1(x, num_classes)),
            (_stage_2, lambda x: _exit_2(x, num_classes)),
            (_stage_3, lambda x: _final_exit(x, num_classes)),
        ],
        input_shape,
        name,
    )
