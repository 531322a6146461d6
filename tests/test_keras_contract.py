"""The Keras training contract: sample weights, compile arguments, get_config round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import data, models
from rdinet_tf import attacks
from rdinet_tf.attacks import autoattack
from rdinet_tf.training.distillation import NeoKD
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import ExitPolicy
from rdinet_tf.training import MultiExitModel, rdi_loss
from rdinet_tf.training import model as model_module


def _compiled(defense="max_average", **kwargs):
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    model.compile(optimizer=keras.optimizers.SGD(0.1), defense=defense, attack=attacks.fgsm(0.1), **kwargs)
    return model


def _weights(model):
    return [np.array(w) for w in model.trainable_weights]


@pytest.mark.parametrize("source", ["arrays", "dataset"])
def test_a_step_with_zero_sample_weights_leaves_the_weights_unchanged(digits, source):
    model = _compiled(slowdown_weight=1.0, distillation=NeoKD())  # every term: clean, adversarial, slowdown, NEO-KD
    images, labels = digits.x_train[:32], digits.y_train[:32]
    zeros = np.zeros(32, np.float32)
    model.fit(images[:8], labels[:8], epochs=1, verbose=0)  # builds the optimizer and the graph
    before = _weights(model)
    if source == "arrays":
        model.fit(images, labels, sample_weight=zeros, batch_size=32, epochs=1, verbose=0)
    else:
        model.fit(data.make_dataset(images, labels, 32, sample_weight=zeros), epochs=1, verbose=0)
    for old, new in zip(before, _weights(model)):
        np.testing.assert_array_equal(old, new)
    ones = np.ones(32, np.float32)
    model.fit(images, labels, sample_weight=ones, batch_size=32, epochs=1, verbose=0)
    assert any(not np.array_equal(old, new) for old, new in zip(before, _weights(model)))


def test_rdi_loss_reduces_sample_weights_as_keras_does(digits):
    model = models.build("smallcnn")
    images, labels = digits.x_train[:16], digits.y_train[:16]
    weights = np.random.default_rng(0).random(16).astype(np.float32)
    clean, adversarial = model(images), model(images[::-1])
    expected = 0.0
    for w_exit, z, z_adv in zip([1.0, 0.5, 2.0], clean, adversarial):
        ce = np.asarray(attacks.cross_entropy(labels, z))
        ce_adv = np.asarray(attacks.cross_entropy(labels, z_adv))
        expected += w_exit * (0.5 * np.sum(weights * ce) + 0.5 * np.sum(weights * ce_adv)) / 16  # sum_over_batch_size
    loss = rdi_loss(labels, clean, adversarial, [1.0, 0.5, 2.0], 0.5, weights)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, clean[0], sample_weight=weights)
    assert float(rdi_loss(labels, clean[:1], None, [1.0], 0.5, weights)) == pytest.approx(float(keras_loss), rel=1e-6)


def test_metrics_are_weighted_by_the_sample_weights(digits):
    model = _compiled(defense="none")
    images, labels = digits.x_test[:64], digits.y_test[:64]
    right = np.argmax(model.predict(images, verbose=0)[0], -1) == labels
    assert 0 < right.mean() < 1
    weighted = model.evaluate(images, labels, sample_weight=right.astype(np.float32), return_dict=True, verbose=0)
    plain = model.evaluate(images, labels, return_dict=True, verbose=0)
    assert weighted["exit_1_acc"] == pytest.approx(1.0)
    assert plain["exit_1_acc"] == pytest.approx(right.mean())


def _smallcnn_without_dropout():
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    return model


def test_training_metrics_clean_and_adversarial_are_weighted_by_the_sample_weights(digits):
    """With a zero learning rate, no dropout and an eps-0 attack, the adversarial batch is the clean batch: every
    exit's clean and adversarial accuracy of a fit step is the weighted accuracy of the training-mode logits."""
    model = _smallcnn_without_dropout()
    model.compile(optimizer=keras.optimizers.SGD(0.0), defense="main", attack=attacks.fgsm(0.0),
                  distillation=NeoKD())
    images, labels = digits.x_train[:64], digits.y_train[:64]
    weights = np.random.default_rng(0).integers(0, 4, 64).astype(np.float32)
    logits = model(images, training=True)
    logs = model.fit(images, labels, sample_weight=weights, batch_size=64, epochs=1, verbose=0).history
    for k, z in enumerate(logits):
        right = np.argmax(z, -1) == labels
        expected = np.sum(weights * right) / np.sum(weights)
        assert abs(expected - right.mean()) > 0.01  # the weights change the value
        assert logs[f"exit_{k + 1}_acc"][0] == pytest.approx(expected, abs=1e-6)
        assert logs[f"exit_{k + 1}_adv_acc"][0] == pytest.approx(expected, abs=1e-6)


def test_neo_kd_term_of_a_step_is_its_weighted_batch_mean(digits):
    """The logged distillation term of a fit step with sample weights w equals NeoKD.loss with w (whose formula
    test_distillation checks against the paper) and differs from it without w."""
    model = _smallcnn_without_dropout()
    model.compile(optimizer=keras.optimizers.SGD(0.0), defense="main", attack=attacks.fgsm(0.1),
                  distillation=NeoKD())
    images, labels = digits.x_train[:64], digits.y_train[:64]
    weights = np.random.default_rng(1).random(64).astype(np.float32) * 2
    logits = model(images, training=True)
    adversarial = model(model.adversarial_batch(images, labels), training=True)
    seed = tf.stack([model.attack_seed, 1])  # the first step's: iterations 0
    expected = float(NeoKD().loss(labels, logits, adversarial, model.exit_weights, seed, weights))
    unweighted = float(NeoKD().loss(labels, logits, adversarial, model.exit_weights, seed))
    logs = model.fit(images, labels, sample_weight=weights, batch_size=64, epochs=1, shuffle=False,
                     verbose=0).history  # unshuffled: the wrong classes are dealt per row
    assert abs(expected - unweighted) > 0.01 * expected
    assert logs["distillation_loss"][0] == pytest.approx(expected, rel=1e-4)


def test_compile_metrics_are_reported_per_exit_and_survive_saving(digits, tmp_path):
    model = _compiled(defense="main", metrics=["sparse_top_k_categorical_accuracy",
                                               keras.metrics.SparseCategoricalCrossentropy(from_logits=True)])
    history = model.fit(digits.x_train[:64], digits.y_train[:64], batch_size=32, epochs=1, verbose=0)
    for k in (1, 2, 3):
        assert f"exit_{k}_sparse_top_k_categorical_accuracy" in history.history
        assert f"exit_{k}_sparse_categorical_crossentropy" in history.history
    images, labels = digits.x_test[:64], digits.y_test[:64]
    result = model.evaluate(images, labels, return_dict=True, verbose=0)
    logits = model.predict(images, verbose=0)
    for k in (1, 2, 3):
        direct = keras.metrics.SparseCategoricalCrossentropy(from_logits=True)
        direct.update_state(labels, logits[k - 1])
        assert result[f"exit_{k}_sparse_categorical_crossentropy"] == pytest.approx(float(direct.result()), rel=1e-5)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert set(restored.evaluate(images, labels, return_dict=True, verbose=0)) == set(result)


@pytest.mark.parametrize("argument, value", [("loss", "mse"), ("loss_weights", [1, 1, 1]),
                                             ("weighted_metrics", ["accuracy"])])
def test_compile_refuses_what_l_rdi_replaces(argument, value):
    model = models.build("smallcnn")
    with pytest.raises(InputError, match=f"compile\\({argument}=...\\) is not supported"):
        model.compile(defense="none", **{argument: value})


def test_compile_refuses_a_metric_that_is_not_one():
    with pytest.raises(InputError, match="metrics must be Keras metric"):
        _compiled(metrics=[42])


@pytest.mark.parametrize("method", [attacks.PGD(0.3, 0.01, 40), attacks.fgsm(0.1), attacks.fast_fgsm(0.2),
                                    attacks.WRM(0.5, 3), attacks.RandomNoise(0.1), autoattack.APGD(0.03, 10),
                                    autoattack.Square(0.03, 100)])
def test_attack_methods_round_trip_their_config(method):
    assert type(method).from_config(method.get_config()) == method
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method)) == method


def test_policy_and_model_round_trip_their_config(digits):
    policy = ExitPolicy([0.5, 0.25])
    again = ExitPolicy.from_config(policy.get_config())
    assert again.thresholds.tolist() == [0.5, 0.25]
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(policy)).thresholds.tolist() \
        == [0.5, 0.25]
    model = models.build("smallcnn")
    model.exit_policy = policy
    copy = MultiExitModel.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    assert copy.exit_policy.thresholds.tolist() == [0.5, 0.25]
    for a, b in zip(model.predict(digits.x_test[:8], verbose=0), copy.predict(digits.x_test[:8], verbose=0)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_private_keras_build_hook_is_replaced_under_this_keras():
    """Keras's private ``_maybe_symbolic_build(iterator, data_batch)`` is there and MultiExitModel's replaces it:
    a Keras that renames it fails here rather than changing distributed training quietly."""
    assert model_module._keras_build_hook_parameters() == ("iterator", "data_batch")
    assert model_module._REPLACES_KERAS_BUILD_HOOK and "_maybe_symbolic_build" in vars(MultiExitModel)
