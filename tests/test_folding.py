"""BatchNorm folded into convolutions, and linear Dense chains into one Dense, for inference-mode forward passes
(rdinet_tf.architecture.folding)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import models
from rdinet_tf.architecture.folding import FoldedConvolution, FoldedDense, folded_segment


def assert_close(actual, expected, tolerance=1e-5):
    """Equal up to ``tolerance`` times the largest magnitude (folding rounds differently)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert np.max(np.abs(actual - expected)) <= tolerance * np.max(np.abs(expected))


def _random_statistics(model, seed=0):
    """Non-trivial BatchNorm statistics and affine weights, as after training."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, n))
            layer.moving_variance.assign(0.3 + rng.random(n))
            if layer.scale:
                layer.gamma.assign(0.2 + rng.random(n))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.3, n))


@pytest.mark.parametrize("name", ["resnet38", "mobilenetv2"])
def test_folded_segments_compute_what_the_layers_compute(name):
    model = models.build(name)
    _random_statistics(model)
    images = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
    plain, folded = images, images
    for stage, head in zip(model.stages, model.heads):
        inference = folded_segment(stage)
        assert any(isinstance(layer, FoldedConvolution) for layer in inference.layers)
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in inference.layers)
        plain, folded = stage(plain, training=False), inference(folded, training=False)
        assert_close(folded, plain)
        assert_close(folded_segment(head)(folded), head(plain, training=False))


def test_a_conv_with_bias_and_a_depthwise_multiplier_fold(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=True, bias_initializer="random_normal")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-3)(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
    x = keras.layers.BatchNormalization(center=False)(x)
    segment = keras.Model(inputs, x)
    _random_statistics(segment)
    folded = folded_segment(segment)
    assert sum(isinstance(layer, FoldedConvolution) for layer in folded.layers) == 2
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    assert_close(folded(images), segment(images, training=False))


def test_folded_layers_report_the_original_variables_and_add_none():
    """Keras tracks the folded layers' sublayers: their weights are the originals', and a folded segment has no
    variable the segment does not have."""
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, use_bias=True)
    batch_norm = keras.layers.BatchNormalization()
    first, second = keras.layers.Dense(5), keras.layers.Dense(3)
    segment = keras.Model(inputs, second(first(keras.layers.Flatten()(batch_norm(conv(inputs))))))
    folded = folded_segment(segment)
    [folded_conv] = [layer for layer in folded.layers if isinstance(layer, FoldedConvolution)]
    [folded_dense] = [layer for layer in folded.layers if isinstance(layer, FoldedDense)]
    assert [id(w) for w in folded_conv.weights] == [id(w) for w in conv.weights + batch_norm.weights]
    assert len(folded_conv.weights) == 6
    assert [id(w) for w in folded_dense.weights] == [id(w) for w in first.weights + second.weights]
    assert {id(w) for w in folded.weights} == {id(w) for w in segment.weights}


def test_a_conv_whose_output_is_used_twice_is_not_folded():
    inputs = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.Add()([keras.layers.BatchNormalization()(y), y])
    segment = keras.Model(inputs, x)
    assert folded_segment(segment) is segment


def test_exit_logits_fold_and_follow_the_weights_without_adding_any(cifar_like):
    model = models.build("resnet38")
    weights = len(model.weights)
    _random_statistics(model)
    before = model.exit_logits(cifar_like, [1])[0]
    assert_close(before, model(cifar_like, training=False)[1])
    _random_statistics(model, seed=5)  # new statistics: the folded passes must see them
    after = model.exit_logits(cifar_like, [1])[0]
    assert_close(after, model(cifar_like, training=False)[1])
    assert np.max(np.abs(after - before)) > 0.1 * np.max(np.abs(before))
    assert len(model.weights) == weights


def test_training_mode_is_not_folded(cifar_like):
    model = models.build("resnet38")
    _random_statistics(model)
    tf.random.set_seed(0)
    # In training mode BatchNorm normalises by the batch: the folded inference weights would differ.
    np.testing.assert_allclose(model.exit_logits(cifar_like, [0], training=True)[0],
                               model(cifar_like, training=True)[0], rtol=1e-5, atol=1e-5)


def _dense_layers(segment):
    return [layer for layer in segment.layers if isinstance(layer, (keras.layers.Dense, FoldedDense))]


def test_smallcnn_side_heads_fold_into_one_dense_and_the_final_head_does_not(mnist_like):
    smallcnn = models.build("smallcnn")
    for layer in smallcnn._flatten_layers():  # non-zero biases and last layer (fc3 starts at zero)
        if isinstance(layer, keras.layers.Dense):
            layer.kernel.assign(np.random.default_rng(2).normal(0, 0.05, layer.kernel.shape))
            layer.bias.assign(np.random.default_rng(3).normal(0, 0.1, layer.bias.shape))
    features = mnist_like
    for stage, head in zip(smallcnn.stages, smallcnn.heads):
        features = stage(features)
        folded = folded_segment(head)
        if head is smallcnn.heads[-1]:  # fc1 and fc2 have a ReLU: nothing to fold
            assert folded is head
            continue
        assert [type(layer) for layer in _dense_layers(folded)] == [FoldedDense]
        assert not any(isinstance(layer, keras.layers.Dropout) for layer in folded.layers)
        assert_close(folded(features), head(features, training=False))


def test_a_dense_chain_folds_until_a_nonlinearity_or_a_second_use():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, use_bias=False)(inputs)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(4, bias_initializer="random_normal")(x)
    x = keras.layers.Dense(3, activation="tanh", bias_initializer="random_normal")(x)  # ends the chain
    y = keras.layers.Dense(3)(x)  # x used twice: this chain starts after it
    y = keras.layers.Dense(2)(y)
    segment = keras.Model(inputs, keras.layers.Concatenate()([x, y]))
    folded = folded_segment(segment)
    chains = [layer.chain for layer in folded.layers if isinstance(layer, FoldedDense)]
    assert sorted(len(chain) for chain in chains) == [2, 3]
    assert len(_dense_layers(folded)) == 2
    vectors = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    assert_close(folded(vectors), segment(vectors, training=False))
