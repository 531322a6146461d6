"""BatchNorm folded into the convolution before it, for inference-mode forward passes.

In inference mode ``BN(conv(x, W))`` is ``conv(x, W * s) + (beta - mean * s)``
with ``s = gamma / sqrt(var + eps)`` per output channel, one convolution
instead of a convolution and two passes over its output (and their backward
passes, in an attack's input gradient). :func:`folded_segment` gives a segment
that computes so, from the original layers' variables at every call: it
follows training and loading with no copy to keep in step, and adds no
weights to save.
"""

import collections

import keras

from rdinet_tf.architecture.graph import flat_layers, replay

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _foldable_pairs(segment):
    """``{conv: bn}`` for each 2-D conv whose only consumer is a channels-last BatchNormalization."""
    layers = list(flat_layers(segment))
    producer = {id(layer.output): layer for layer in layers}
    consumers = collections.Counter(id(t) for layer in layers for t in keras.tree.flatten(layer.input))
    consumers.update(id(t) for t in segment.outputs)
    pairs = {}
    for layer in layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.axis not in (-1, 3):
            continue
        conv = producer.get(id(layer.input))
        if (isinstance(conv, _CONVOLUTIONS) and conv.data_format == "channels_last"
                and conv.activation is keras.activations.linear and consumers[id(conv.output)] == 1):
            pairs[conv] = layer
    return pairs


class FoldedConvolution(keras.layers.Layer):
    """``conv`` followed by ``batch_norm`` in inference mode, as one convolution with a bias.

    Holds no variables of its own: the kernel and bias are computed from the two
    layers' variables at each call.
    """

    def __init__(self, conv, batch_norm, **kwargs):
        super().__init__(name=f"{conv.name}_folded", dtype=conv.dtype_policy, **kwargs)
        self._pair = (conv, batch_norm)  # a tuple: not tracked, the weights stay the original layers'

    def call(self, inputs):
        conv, batch_norm = self._pair
        ops = keras.ops
        scale = ops.rsqrt(batch_norm.moving_variance + batch_norm.epsilon)
        if batch_norm.scale:
            scale = scale * batch_norm.gamma
        shift = -batch_norm.moving_mean * scale
        if batch_norm.center:
            shift = shift + batch_norm.beta
        if conv.use_bias:
            shift = shift + conv.bias * scale
        if isinstance(conv, keras.layers.DepthwiseConv2D):
            kernel = ops.cast(conv.kernel * ops.reshape(scale, (1, 1, -1, conv.depth_multiplier)),
                              self.compute_dtype)
            outputs = ops.depthwise_conv(inputs, kernel, conv.strides, conv.padding, conv.data_format,
                                         conv.dilation_rate)
        else:
            outputs = conv.convolution_op(inputs, ops.cast(conv.kernel * scale, self.compute_dtype))
        return outputs + ops.cast(shift, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return self._pair[0].compute_output_shape(input_shape)


def folded_segment(segment):
    """``segment`` (a functional model) with each conv + BatchNorm pair computed as one convolution.

    For inference only: the folded pairs ignore ``training``. Every other
    layer is the segment's own; a segment with nothing to fold is returned as is.
    """
    pairs = _foldable_pairs(segment)
    if not pairs:
        return segment
    convolution_of = {bn: conv for conv, bn in pairs.items()}

    def make_layer(layer):  # the conv passes its input on; the folded pair computes where the BN was
        if layer in pairs:
            return lambda inputs: inputs
        if layer in convolution_of:
            return FoldedConvolution(convolution_of[layer], layer)
        return layer

    inputs = keras.Input(batch_shape=segment.inputs[0].shape, dtype=segment.inputs[0].dtype)
    return keras.Model(inputs, replay(segment, inputs, make_layer), name=f"{segment.name}_folded")
