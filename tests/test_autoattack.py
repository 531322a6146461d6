import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import evaluation
from rdinet_tf import attacks
from rdinet_tf.attacks import autoattack
from rdinet_tf.models import MultiExitModel

SUITE = autoattack.AutoAttack(0.3, steps=10, queries=150, num_targets=1)


@pytest.fixture(scope="module")
def trained(digits_model):
    return digits_model


def gradient_masked(model):
    """The same network with every exit's logits behind stop_gradient: zero input gradients."""
    def masked_head(head):
        logits = keras.layers.Lambda(lambda z: tf.stop_gradient(z) + 0.0 * z)(head.output)
        return keras.Model(head.input, logits, name=f"{head.name}_masked")

    return MultiExitModel(model.stages, [masked_head(h) for h in model.heads], exit_policy=model.exit_policy)


def exit_accuracy(model, images, labels, exit_index=1):
    return float(np.mean(np.argmax(model.exit_logits(images, [exit_index])[0], -1) == labels))


def test_dlr_losses_on_a_hand_made_example():
    logits = tf.constant([[3.0, 1.0, 2.0, 0.5], [3.0, 1.0, 2.0, 0.5]])
    labels = tf.constant([0, 2])
    # sorted: 3, 2, 1, 0.5 -> z_pi1 - z_pi3 = 2; z_pi1 - (z_pi3 + z_pi4) / 2 = 2.25
    np.testing.assert_allclose(autoattack.dlr_loss(labels, logits), [-(3 - 2) / 2, -(2 - 3) / 2], rtol=1e-6)
    targets = tf.constant([3, 1])
    np.testing.assert_allclose(autoattack.targeted_dlr_loss(labels, logits, targets),
                               [-(3 - 0.5) / 2.25, -(2 - 1) / 2.25], rtol=1e-6)
    np.testing.assert_allclose(autoattack.margin_loss(labels, logits), [2 - 3, 3 - 2], rtol=1e-6)
    scaled = autoattack.dlr_loss(labels, 7.0 * logits + 1.0)  # invariant to shift and scale
    np.testing.assert_allclose(scaled, autoattack.dlr_loss(labels, logits), rtol=1e-5)


def test_reference_schedules():
    # APGD: intervals of int(0.22 n) steps, each int(0.03 n) shorter, down to int(0.06 n) (all at least 1)
    assert autoattack.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert autoattack.checkpoints(10) == list(range(2, 11))
    assert autoattack.checkpoints(25) == [5, 9, 12, 14, *range(15, 26)]
    # Square: p_init halved past iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, whatever the queries
    iterations = (0, 10, 11, 50, 51, 200, 201, 500, 501, 1000, 1001, 2001, 4001, 6001, 8001)
    halvings = (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6, 7, 8, 9)
    np.testing.assert_allclose([autoattack.square_fraction(t) for t in iterations], [0.8 / 2**k for k in halvings])
    assert autoattack.square_fraction(4999, p_init=0.4) == 0.4 / 128


def test_apgd_halves_its_step_when_at_most_rho_of_its_steps_raised_the_loss():
    centre = tf.constant(np.random.default_rng(0).uniform(0.35, 0.65, (4, 6, 6, 1)), tf.float32)
    start = tf.fill(centre.shape, 0.5)
    distance = {}
    for rho in (1.0, 0.99):
        calls = tf.Variable(0.0)

        def loss(x, _):  # every step raises it (the count of calls dominates); its gradient points to centre
            return 100.0 * calls.assign_add(1.0) - tf.reduce_sum(tf.abs(x - centre), axis=[1, 2, 3])

        adversarial = autoattack.APGD(0.2, steps=100, rho=rho, random_start=False).perturb(loss, start, None, [0, 0])
        distance[rho] = float(tf.reduce_max(tf.abs(adversarial - centre)))
    # all k steps of each interval raised the loss: k <= 1.0 k halves the step (it converges), k <= 0.99 k does not
    assert distance[1.0] < 0.01 and distance[0.99] > 0.05


def test_square_side_follows_the_schedule_whatever_the_queries():
    queries, images = 1000, tf.fill([64, 28, 28, 1], 0.5)
    calls, sides = tf.Variable(0), tf.Variable(tf.zeros([queries + 1], tf.int32))
    stripes = tf.Variable(tf.zeros(images.shape))

    def loss(x, _):
        """Rows each proposal changes (its square's side); never above the start's 0, so nothing is kept."""
        start = tf.cond(tf.equal(calls, 0), lambda: stripes.assign(x), lambda: tf.identity(stripes))
        rows = tf.reduce_sum(tf.cast(tf.reduce_any(tf.not_equal(x, start), axis=[2, 3]), tf.int32), axis=1)
        sides[calls].assign(tf.reduce_max(rows))
        calls.assign_add(1)
        return -tf.cast(rows, tf.float32)

    tf.function(lambda: autoattack.Square(0.25, queries=queries).perturb(loss, images, None, [0, 0]))()
    proposed = sides.numpy()[1:]
    expected = [round(math.sqrt(autoattack.square_fraction(t) * 28 * 28)) for t in range(queries)]
    np.testing.assert_array_equal(proposed, expected)
    # p halved 4 times in 1,000 queries (side 25 -> 6), as AutoAttack runs Square; not 9 times (rescaled)
    assert (proposed[0], proposed[-1]) == (25, 6) and list(np.flatnonzero(np.diff(proposed)) + 1) == [11, 51, 201, 501]


def test_apgd_halves_its_step_and_converges_where_fixed_step_pgd_oscillates():
    centre = tf.constant(np.random.default_rng(0).uniform(0.35, 0.65, (4, 6, 6, 1)), tf.float32)
    loss = lambda x, _: -tf.reduce_sum(tf.abs(x - centre), axis=[1, 2, 3])  # noqa: E731 - maximum at centre
    start = tf.fill(centre.shape, 0.5)
    apgd = autoattack.APGD(0.2, steps=100).perturb(loss, start, None, [0, 0])
    pgd = attacks.PGD(0.2, 0.4, 100).perturb(loss, start, None, [0, 0])
    assert float(tf.reduce_max(tf.abs(apgd - centre))) < 0.01
    assert float(tf.reduce_max(tf.abs(pgd - centre))) > 0.05
    assert float(tf.reduce_max(tf.abs(apgd - start))) <= 0.2 + 1e-6


def test_apgd_ce_is_at_least_as_strong_as_pgd_with_the_same_budget(trained, digits):
    images, labels = digits.x_test[:96], digits.y_test[:96]
    pgd = attacks.generate(trained, images, labels, attacks.PGD(0.1, 0.025, 10), "exit_2", seed=0)
    apgd = attacks.generate(trained, images, labels, autoattack.APGD(0.1, 10), "exit_2", seed=0).numpy()
    assert np.abs(apgd - images).max() <= 0.1 + 1e-6 and apgd.min() >= 0 and apgd.max() <= 1
    clean = exit_accuracy(trained, images, labels)
    assert exit_accuracy(trained, apgd, labels) <= min(exit_accuracy(trained, pgd, labels) + 0.03, clean - 0.3)


def test_targeted_apgd_moves_inputs_towards_the_target_class(trained, digits):
    images, labels = digits.x_test[:64], digits.y_test[:64]
    clean_logits = trained.exit_logits(images, [1])[0]
    targets = tf.argsort(clean_logits, axis=-1, direction="DESCENDING")[:, 2].numpy()  # third most likely
    hits, target_above_true = {}, {}
    for name, logit_loss in (("targeted", lambda y, z: autoattack.targeted_dlr_loss(y, z, targets)),
                             ("untargeted", attacks.cross_entropy)):
        adversarial = attacks.generate(trained, images, labels, autoattack.APGD(0.2, 10), "exit_2", seed=0,
                                       logit_loss=logit_loss)
        logits = trained.exit_logits(adversarial, [1])[0].numpy()
        hits[name] = np.mean(logits.argmax(-1) == targets)
        target_above_true[name] = np.mean(logits[np.arange(64), targets] > logits[np.arange(64), labels])
    assert hits["targeted"] > hits["untargeted"] + 0.2
    assert target_above_true["targeted"] >= 0.9 > target_above_true["untargeted"]


def test_square_fools_the_model_from_loss_values_alone(trained, digits, monkeypatch):
    images, labels = digits.x_test[:64], digits.y_test[:64]

    def no_gradient_loss(x, y):  # gradients of this loss are None
        return autoattack.margin_loss(y, tf.stop_gradient(trained.exit_logits(x, [1])[0]))

    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(no_gradient_loss(x, labels))
    assert tape.gradient(total, x) is None

    def forbidden(*_):
        raise AssertionError("Square must not take gradients")

    monkeypatch.setattr(attacks, "loss_and_gradient", forbidden)
    square = tf.function(lambda x, y: autoattack.Square(0.3, queries=150).perturb(no_gradient_loss, x, y, [0, 0]))
    adversarial = square(images, labels).numpy()
    assert np.abs(adversarial - images).max() <= 0.3 + 1e-6 and adversarial.min() >= 0 and adversarial.max() <= 1
    noise = attacks.RandomNoise(0.3).perturb(None, images, labels, [0, 0])
    assert exit_accuracy(trained, adversarial, labels) < exit_accuracy(trained, noise, labels) - 0.3


def test_sanity_flag_thresholds():
    checks = {"square_extra": 0.0, "unbounded_accuracy": 0.01, "fewer_steps_accuracy": 0.5,
              "more_steps_accuracy": 0.51}
    assert not any(autoattack.sanity_flags(checks, 0.02).values())
    raised = autoattack.sanity_flags({**checks, "square_extra": 0.1, "more_steps_accuracy": 0.6}, 0.02)
    assert raised == {"square_beats_gradient": True, "unbounded_eps_not_zero": False,
                      "more_steps_raise_accuracy": True}


def test_suite_flags_a_gradient_masked_model(trained, digits):
    masked = gradient_masked(trained)
    images, labels = digits.x_test[:48], digits.y_test[:48]
    np.testing.assert_allclose(masked(images)[0], trained(images)[0], rtol=1e-5, atol=1e-5)
    result = autoattack.run_suite(masked, images, labels, SUITE, objectives=["routing"])
    assert result.flags["square_beats_gradient"] and result.flags["unbounded_eps_not_zero"]
    assert result.robust_accuracy < result.clean_accuracy - 0.3  # Square still breaks it
    assert "possible gradient masking" in result.table()


def test_report_with_the_suite_on_a_normal_model(trained, digits):
    """At eps 0.1 (not 0.3, where APGD-CE alone leaves nothing to attack) every later attack of the suite
    attacks the samples APGD-CE left correct (15 of 48 here, about a third)."""
    images, labels = digits.x_test[:48], digits.y_test[:48]
    suite = autoattack.AutoAttack(0.1, steps=10, queries=150, num_targets=1)
    report = evaluation.robustness_report(trained, images, labels, [attacks.PGD(0.1, 0.025, 5)],
                                        objectives=["routing"], progress=False, slowdown=False,
                                        autoattack=suite)
    saved = json.loads(json.dumps(report.to_dict()))["autoattack"]
    assert min(r["attacked"] for r in saved["runs"]) >= 5  # no attack of the suite runs on nothing
    assert not any(saved["flags"].values()), saved["checks"]
    assert [(r["attack"], r["objective"]) for r in saved["runs"]] == [
        ("apgd-ce", "routing"), ("apgd-dlr", "routing"), ("apgd-t", "routing"), ("square", "routing")]
    assert saved["clean_accuracy"] == pytest.approx(report.clean.accuracy)
    accuracies = [r["robust_accuracy"] for r in saved["runs"]]
    assert accuracies == sorted(accuracies, reverse=True) and saved["robust_accuracy"] == accuracies[-1]
    assert saved["robust_accuracy"] <= report.worst_case_ata + 0.05  # at least as strong as PGD-5
    assert saved["settings"]["queries"] == 150 and "autoattack robust accuracy" in report.table()
    assert len(saved["robust_samples"]) == round(saved["robust_accuracy"] * len(labels))
    combined = report.per_sample_worst_case_with_autoattack
    assert combined <= min(report.per_sample_worst_case_ata, saved["robust_accuracy"])
    assert combined >= report.per_sample_worst_case_ata + saved["robust_accuracy"] - 1  # both sets survive
