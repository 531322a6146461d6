"""Attacks that know the exit policy: exit hijack and threshold-aware slowdown."""

import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import evaluation
from rdinet_tf import attacks
from rdinet_tf.attacks.autoattack import APGD
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import exit_entropies

PGD = attacks.PGD(0.2, 0.03, 10)


@pytest.fixture(scope="module")
def test_set(digits):
    return digits.x_test[:128], digits.y_test[:128]


def side_exit_and_wrong(model, images, labels):
    """Share of images the adaptive model answers wrongly from a side exit."""
    result = model.exit_policy.predict(model, images)
    return float(np.mean((result.exits < model.num_exits - 1) & (result.predictions != labels)))


def test_exit_hijack_sends_inputs_out_of_side_exits_with_wrong_answers(digits_model, test_set):
    model, (images, labels) = digits_model, test_set
    hijacked = attacks.generate(model, images, labels, PGD, "exit_hijack", model.exit_policy, seed=0).numpy()
    assert np.abs(hijacked - images).max() <= 0.2 + 1e-6
    assert side_exit_and_wrong(model, images, labels) < 0.05
    routing = attacks.generate(model, images, labels, PGD, "routing", model.exit_policy, seed=0).numpy()
    assert side_exit_and_wrong(model, hijacked, labels) > side_exit_and_wrong(model, routing, labels) + 0.2


def test_exit_hijack_loss_is_wrong_class_confidence_with_earlier_exits_kept_above_threshold(digits_model, digits):
    model, images, labels = digits_model, tf.constant(digits.x_test[:16]), digits.y_test[:16]
    logits = [np.asarray(z, np.float64) for z in model(images)]
    entropies = np.asarray(exit_entropies(model(images)), np.float64)
    threshold = model.exit_policy.thresholds[0] * (1 + attacks.THRESHOLD_MARGIN)
    second = logits[1] - logits[1].max(-1, keepdims=True)
    log_probs = second - np.log(np.exp(second).sum(-1, keepdims=True))
    wrong = np.where(np.eye(10)[labels] > 0, -np.inf, second).argmax(-1)
    expected = log_probs[np.arange(16), wrong] - np.maximum(threshold - entropies[:, 0], 0)
    got = attacks.exit_hijack_loss(model, model.exit_policy, 1)(images, labels).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_select_routed_keeps_the_candidate_the_adaptive_model_gets_most_wrong(digits_model, test_set):
    model, (images, labels) = digits_model, test_set
    candidates = [images, attacks.generate(model, images, labels, PGD, "routing", model.exit_policy, seed=0)]
    chosen = attacks.select_routed(model, model.exit_policy, candidates, labels).numpy()
    scores = np.stack([attacks.cross_entropy(labels, model.exit_policy.route(model(c))[0]).numpy()
                       for c in candidates])
    np.testing.assert_array_equal(chosen, np.stack(candidates, 1)[np.arange(len(images)), scores.argmax(0)])


def test_threshold_slowdown_loss_is_capped_past_each_threshold(digits_model, digits):
    model, images = digits_model, tf.constant(digits.x_test[:16])
    entropies = np.asarray(exit_entropies(model(images)), np.float64)[:, :-1]
    thresholds = model.exit_policy.thresholds
    expected = np.minimum(entropies - thresholds, attacks.THRESHOLD_MARGIN * thresholds).mean(1)
    got = attacks.objective_loss(model, "threshold_slowdown", model.exit_policy)(images, None).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_threshold_slowdown_keeps_inputs_from_leaving_early(digits_model, test_set):
    model, (images, labels) = digits_model, test_set
    slowed = attacks.generate(model, images, labels, PGD, "threshold_slowdown", model.exit_policy, seed=0).numpy()
    noise = attacks.RandomNoise(0.2).perturb(None, images, labels, [0, 0]).numpy()
    clean, noisy, attacked = (model.exit_policy.predict(model, x) for x in (images, noise, slowed))
    assert attacked.exit_shares[-1] > max(clean.exit_shares[-1], noisy.exit_shares[-1]) + 0.3
    assert attacked.mean_cost > max(clean.mean_cost, noisy.mean_cost) + 1.0


def test_apgd_runs_the_policy_objectives(digits_model, test_set):
    model, (images, labels) = digits_model, test_set
    hijacked = attacks.generate(model, images[:32], labels[:32], APGD(0.2, steps=10), "exit_hijack",
                                model.exit_policy, seed=0).numpy()
    assert np.abs(hijacked - images[:32]).max() <= 0.2 + 1e-6
    assert side_exit_and_wrong(model, hijacked, labels[:32]) > 0.3


def test_policy_objectives_need_a_policy_and_side_exits():
    for objective in ("exit_hijack", "threshold_slowdown"):
        with pytest.raises(InputError, match=f"'{objective}' objective needs an exit policy"):
            attacks.check_objective(objective, 3)
        with pytest.raises(InputError, match="needs a model with side exits"):
            attacks.check_objective(objective, 1, policy=object())
    assert attacks.check_objective("exit_2", 3) == 1
    with pytest.raises(InputError, match="unknown attack objective 'exit_hijacks'"):
        attacks.check_objective("exit_hijacks", 3, policy=object())


def test_report_runs_both_by_default_and_counts_them_in_the_worst_case(digits_model, test_set):
    model, (images, labels) = digits_model, test_set
    report = evaluation.robustness_report(model, images[:64], labels[:64], [attacks.PGD(0.2, 0.03, 5)],
                                        progress=False)
    names = [r.name for r in report.attacks]
    assert names[-2:] == ["pgd routing", "pgd exit_hijack"]
    assert [s.name for s in report.slowdown] == ["pgd slowdown", "pgd threshold_slowdown"]
    every = report.attacks + report.slowdown
    assert report.worst_case_ata == min(r.accuracy for r in every)
    assert report.per_sample_worst_case_ata <= report.worst_case_ata
    assert "pgd exit_hijack" in report.table() and "pgd threshold_slowdown" in report.table()
