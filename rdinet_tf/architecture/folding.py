"""Inference-mode segments with fewer layers: BatchNorm folded into the convolution before it,
and chains of linear Dense layers folded into one Dense.

In inference mode ``BN(conv(x, W))`` is ``conv(x, W * s) + (beta - mean * s)``
with ``s = gamma / sqrt(var + eps)`` per output channel, one convolution
instead of a convolution and two passes over its output (and their backward
passes, in an attack's input gradient). Likewise Dense layers with no
nonlinearity between them (Dropout is the identity in inference mode), as in
SmallCNN's side heads 576-200-200-10, are ``x (W1 W2 W3) + b``: one 576-10
matrix instead of three, which on a device at batch size 1 also reads 27
times fewer weights. :func:`folded_segment` gives a segment that computes so,
from the original layers' variables at every call: it follows training and
loading with no copy to keep in step, and adds no weights to save (a TFLite
export turns the products into constants).
"""

import collections

import keras

from rdinet_tf.architecture.graph import flat_layers, replay

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _sole_user_of(segment):
    """A function: layer -> the one layer of ``segment`` that reads its output, else None
    (read by several layers, or an output of the segment)."""
    users = collections.defaultdict(list)
    for layer in flat_layers(segment):
        for tensor in keras.tree.flatten(layer.input):
            users[id(tensor)].append(layer)
    for tensor in segment.outputs:
        users[id(tensor)].append(None)

    def sole_user(layer):
        found = users[id(layer.output)]
        return found[0] if len(found) == 1 else None

    return sole_user


def _foldable_pairs(segment):
    """``{conv: bn}`` for each 2-D conv whose only consumer is a channels-last BatchNormalization."""
    sole_user = _sole_user_of(segment)
    pairs = {}
    for conv in flat_layers(segment):
        if not (isinstance(conv, _CONVOLUTIONS) and conv.data_format == "channels_last"
                and conv.activation is keras.activations.linear):
            continue
        batch_norm = sole_user(conv)
        if isinstance(batch_norm, keras.layers.BatchNormalization) and batch_norm.axis in (-1, 3):
            pairs[conv] = batch_norm
    return pairs


class FoldedConvolution(keras.layers.Layer):
    """``conv`` followed by ``batch_norm`` in inference mode, as one convolution with a bias.

    Creates no variables: the kernel and bias are computed from the two layers'
    variables at each call. Keras tracks the two layers as sublayers, so this
    layer's ``weights`` are theirs (the same variables, not copies).
    """

    def __init__(self, conv, batch_norm, **kwargs):
        super().__init__(name=f"{conv.name}_folded", dtype=conv.dtype_policy, **kwargs)
        self.conv, self.batch_norm = conv, batch_norm

    def call(self, inputs):
        conv, batch_norm = self.conv, self.batch_norm
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
        return self.conv.compute_output_shape(input_shape)


def _plain_dense(layer):
    """A Dense layer with an ordinary float kernel (not quantized, no LoRA)."""
    return (type(layer) is keras.layers.Dense and layer.quantization_mode is None
            and not layer.lora_enabled)


def _foldable_dense_chains(segment):
    """``(chain, between)`` for each maximal chain of two or more Dense layers that fold into one.

    In a chain every Dense but the last is linear and its output reaches the
    next Dense only through Dropout layers (``between``), every tensor on the
    way used once.
    """
    sole_user = _sole_user_of(segment)
    following = {}  # linear Dense -> (the next Dense of its chain, the Dropouts between)
    for layer in flat_layers(segment):
        if not (_plain_dense(layer) and layer.activation is keras.activations.linear):
            continue
        between, user = [], sole_user(layer)
        while isinstance(user, keras.layers.Dropout):
            between.append(user)
            user = sole_user(user)
        if _plain_dense(user):
            following[layer] = (user, between)
    continued = {nxt for nxt, _ in following.values()}
    chains = []
    for start in (layer for layer in following if layer not in continued):  # graph order
        chain, between = [start], []
        while chain[-1] in following:
            nxt, dropouts = following[chain[-1]]
            chain.append(nxt)
            between += dropouts
        chains.append((chain, between))
    return chains


class FoldedDense(keras.layers.Layer):
    """Dense layers ``chain`` applied one after another in inference mode, as one Dense.

    ``x W1 + b1`` then ``(.) W2 + b2`` ... is ``x (W1 W2 ...) + b``, followed by
    the last layer's activation. Creates no variables: the kernel and bias are
    computed from the layers' variables at each call, right to left (the
    cheapest order when the chain narrows). Keras tracks the layers of the
    chain as sublayers, so this layer's ``weights`` are theirs (the same
    variables, not copies).
    """

    def __init__(self, chain, **kwargs):
        super().__init__(name=f"{chain[0].name}_folded", dtype=chain[0].dtype_policy, **kwargs)
        self.chain = list(chain)

    def call(self, inputs):
        ops = keras.ops
        *earlier, last = self.chain
        kernel, bias = last.kernel, (last.bias if last.use_bias else None)
        for layer in reversed(earlier):
            if layer.use_bias:
                shift = ops.matmul(layer.bias[None], kernel)[0]
                bias = shift if bias is None else bias + shift
            kernel = ops.matmul(layer.kernel, kernel)
        outputs = ops.matmul(inputs, ops.cast(kernel, self.compute_dtype))
        if bias is not None:
            outputs = outputs + ops.cast(bias, self.compute_dtype)
        return last.activation(outputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.chain[-1].units)


def _passes_on(inputs):
    return inputs


def folded_segment(segment):
    """``segment`` (a functional model) with each conv + BatchNorm pair computed as one convolution
    and each chain of linear Dense layers as one Dense.

    For inference only: the folded layers ignore ``training`` (the Dropout
    layers of a folded chain are left out). Every other layer is the segment's
    own; a segment with nothing to fold is returned as is.
    """
    replacement = {}  # the first layer of a folded group computes the group; the others pass it on
    for conv, batch_norm in _foldable_pairs(segment).items():
        replacement[conv] = _passes_on
        replacement[batch_norm] = FoldedConvolution(conv, batch_norm)
    for chain, between in _foldable_dense_chains(segment):
        replacement[chain[0]] = FoldedDense(chain)
        replacement.update((layer, _passes_on) for layer in chain[1:] + between)
    if not replacement:
        return segment
    inputs = keras.Input(batch_shape=segment.inputs[0].shape, dtype=segment.inputs[0].dtype)
    return keras.Model(inputs, replay(segment, inputs, lambda layer: replacement.get(layer, layer)),
                       name=f"{segment.name}_folded")
