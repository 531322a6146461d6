"""Defenses that know the exit policy: routing-aware, exit-hijack and per-sample worst-case training, the
abstention term, and thresholds that follow the model in training (from held-out data, saved with the model)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import models
from rdinet_tf import attacks
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import ExitPolicy, TrainingThresholds, exit_entropies
from rdinet_tf.training import WORST_CASE_OBJECTIVES, FollowThresholds, abstention_loss

ATTACK = attacks.PGD(0.1, 0.05, 2)


def test_abstention_is_the_wrongness_weighted_confidence_of_an_exit():
    logits = np.array([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 6.0, 0.0], [2.0, 1.0, 0.0]], np.float32)
    labels = np.array([0, 1, 0, 2])
    weights = np.array([1.0, 2.0, 0.5, 1.0], np.float32)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    entropy = -(p * np.log(p + 1e-5)).sum(1)
    per_sample = (1 - p[np.arange(4), labels]) * (1 - entropy / math.log(3))
    assert per_sample[1] == pytest.approx(0, abs=1e-4)  # a uniform exit abstains already
    assert per_sample[2] > 0.9  # confident and wrong: the term's target
    assert per_sample[0] < 0.05  # confident and right: left alone
    np.testing.assert_allclose(float(abstention_loss(labels, logits, weights)), (weights * per_sample).sum() / 4,
                               rtol=1e-5)
    np.testing.assert_allclose(float(abstention_loss(labels, logits)), per_sample.mean(), rtol=1e-5)


def test_abstention_moves_the_entropy_not_the_true_class_probability():
    logits = tf.Variable([[0.0, 5.0, 0.0]])
    with tf.GradientTape() as tape:
        loss = abstention_loss(np.array([0]), logits)
    gradient = tape.gradient(loss, logits).numpy()
    assert gradient[0, 1] > 0  # descending it lowers the wrong class's logit: the exit grows uncertain
    np.testing.assert_allclose(gradient.sum(), 0, atol=1e-6)  # a softmax-invariant direction


@pytest.mark.parametrize("thresholds", [[0.5, 1.0], [0.0, 1.0], [0.7, 0.0], [0.0, 0.0]])
def test_training_thresholds_route_as_the_first_exit_strictly_below_an_open_threshold(thresholds):
    rng = np.random.default_rng(0)
    logits = [rng.normal(0, 2, (200, 10)).astype(np.float32) for _ in range(3)]
    entropies = np.asarray(exit_entropies(logits))
    expected = np.full(200, 2)
    for i in range(200):
        for k in range(2):
            if thresholds[k] > 0 and entropies[i, k] < np.float32(thresholds[k]):
                expected[i] = k
                break
    routed, exits = TrainingThresholds(thresholds).route(logits)
    np.testing.assert_array_equal(np.asarray(exits), expected)
    np.testing.assert_array_equal(np.asarray(routed), np.stack(logits, 1)[np.arange(200), expected])


def test_training_thresholds_refuse_a_wrong_count_and_negative_values():
    policy = TrainingThresholds([0.5, 1.0])
    with pytest.raises(InputError, match="expected 2 thresholds"):
        policy.assign([0.5])
    with pytest.raises(InputError, match="non-negative"):
        policy.assign([0.5, -1.0])


@pytest.fixture(scope="module")
def batch(digits):
    return digits.x_val[:16], digits.y_val[:16].astype(np.int32)


def _model(defense, thresholds=(1.2, 1.6), **compile_args):
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    model.compile(optimizer=keras.optimizers.SGD(0.01), defense=defense, attack=ATTACK,
                  training_thresholds=list(thresholds), **compile_args)
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.parametrize("defense", ["routing", "exit_hijack"])
def test_a_policy_aware_defense_attacks_the_thresholds_it_follows(defense, batch):
    model = _model(defense, thresholds=(2.5, 2.5))  # above every entropy of this untrained model: all leave first
    images, labels = batch
    expected = attacks.generate(model, images, labels, ATTACK, defense, ExitPolicy([2.5, 2.5]), seed=0)
    np.testing.assert_array_equal(np.asarray(model.adversarial_batch(images, labels)), np.asarray(expected))
    model.training_policy.assign([0.01, 0.02])  # other thresholds (all go to the last exit): another attack
    moved = attacks.generate(model, images, labels, ATTACK, defense, ExitPolicy([0.01, 0.02]), seed=0)
    np.testing.assert_array_equal(np.asarray(model.adversarial_batch(images, labels)), np.asarray(moved))
    assert not np.array_equal(np.asarray(moved), np.asarray(expected))


def test_the_worst_case_defense_takes_per_sample_the_candidate_with_the_highest_routed_loss(batch):
    model = _model("worst_case")
    images, labels = batch
    policy = ExitPolicy.calibrate(model, images)  # a third of the batch leaves at each exit
    model.training_policy.assign(policy.thresholds)
    candidates = [np.asarray(attacks.generate(model, images, labels, ATTACK, objective, policy, seed=7919 * i))
                  for i, objective in enumerate(WORST_CASE_OBJECTIVES)]
    losses = np.stack([np.asarray(attacks.cross_entropy(labels, policy.route(model.exit_logits(c))[0]))
                       for c in candidates])
    chosen = np.asarray(model.adversarial_batch(images, labels))
    expected = np.stack(candidates)[losses.argmax(0), np.arange(len(images))]
    np.testing.assert_array_equal(chosen, expected)
    assert len(set(losses.argmax(0))) > 1  # the candidates each win somewhere


@pytest.mark.parametrize("defense", ["routing", "exit_hijack", "worst_case"])
def test_policy_aware_defenses_train_with_the_abstention_term(defense, digits):
    model = _model(defense, abstention_weight=1.0)
    history = model.fit(digits.x_train[:64], digits.y_train[:64], batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and history.history["abstention_loss"][0] > 0


def test_follow_thresholds_calibrates_on_held_out_images_before_each_epoch_and_logs_them(digits):
    model = _model("routing", thresholds=(0.0, 0.0))
    follow = FollowThresholds(digits.x_val[:100])
    history = model.fit(digits.x_train[:64], digits.y_train[:64], batch_size=32, epochs=1, verbose=0,
                        callbacks=[follow])
    expected = ExitPolicy.calibrate(model, digits.x_val[:100]).thresholds  # the weights changed in the epoch
    before = np.array([history.history["threshold_1"][0], history.history["threshold_2"][0]])
    assert np.all(before > 0) and not np.allclose(before, expected, rtol=0, atol=0)
    follow.on_epoch_begin(1)
    np.testing.assert_allclose(model.training_policy.values(), expected, rtol=1e-6)


def test_the_training_thresholds_are_saved_with_the_model(tmp_path):
    model = _model("exit_hijack", thresholds=(0.25, 0.0), abstention_weight=0.5)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.training_policy.values(), [0.25, 0.0])
    assert loaded.defense == "exit_hijack" and loaded.abstention_weight == 0.5


def test_without_thresholds_a_policy_aware_defense_starts_from_the_models_policy_or_closed_exits():
    model = models.build("smallcnn")
    model.compile(defense="routing", attack=ATTACK)
    np.testing.assert_array_equal(model.training_policy.values(), [0.0, 0.0])
    model.exit_policy = ExitPolicy([0.3, 0.4])
    model.compile(defense="routing", attack=ATTACK)
    np.testing.assert_allclose(model.training_policy.values(), [0.3, 0.4])
    with pytest.raises(InputError, match="abstention_weight"):
        model.compile(defense="none", abstention_weight=1.0)
