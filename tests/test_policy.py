import json

import keras
import numpy as np
import pytest

from rdinet_tf.architecture import flops
from rdinet_tf.exits import policy as policy_module
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import (ExitOutcomes, ExitPolicy, entropy, first_confident_exit, robust_thresholds,
                              routed_logits, thresholds_for_counts)

import oracle


def test_entropy_matches_reference_formula():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], np.float32)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = -(p * np.log(p + 1e-5)).sum(1)
    np.testing.assert_allclose(entropy(logits), expected, rtol=1e-5)


def test_first_confident_exit_and_last_exit_always_answers():
    entropies = np.array([[0.1, 0.1, 2.0], [0.9, 0.2, 2.0], [0.9, 0.9, 0.0]], np.float32)
    exits = np.asarray(first_confident_exit(entropies, [0.5, 0.5]))
    assert exits.tolist() == [0, 1, 2]


def test_zero_threshold_disables_an_exit_and_its_head_cost(smallcnn, mnist_like):
    entropies = np.array([[-1e-6, 0.1, 2.0]], np.float32)  # a hair below 0 still cannot leave
    assert np.asarray(first_confident_exit(entropies, [0.0, 0.5])).tolist() == [1]
    single_exit = ExitPolicy([0.0, 0.0]).predict(smallcnn, mnist_like)
    stages, heads = flops.segment_macs(smallcnn)
    backbone = sum(s.total for s in stages) + heads[-1].total
    assert single_exit.exits.tolist() == [2] * len(mnist_like)
    assert single_exit.mean_cost == pytest.approx(backbone / 1e6)
    assert single_exit.mean_cost < flops.exit_costs(smallcnn)[-1]


def test_calibration_keeps_exits_of_fully_confident_samples_enabled():
    entropies = np.full((30, 3), -1e-5)  # softmax exactly 1 everywhere
    thresholds = thresholds_for_counts(entropies, [10, 10])
    assert (thresholds > 0).all()
    assert np.asarray(first_confident_exit(entropies, thresholds)).tolist() == [0] * 30


def test_equal_share_walks_exits_like_the_reference():
    rng = np.random.default_rng(0)
    entropies = rng.random((90, 3))
    thresholds = thresholds_for_counts(entropies, [30, 30])
    assert thresholds[0] == np.sort(entropies[:, 0])[30]
    left = entropies[entropies[:, 0] >= thresholds[0]]
    assert thresholds[1] == np.sort(left[:, 1])[30]
    exits = np.asarray(first_confident_exit(entropies, thresholds))
    assert np.bincount(exits).tolist() == [30, 30, 30]


def test_calibrate_equal_share_and_shares(smallcnn, mnist_like):
    policy = ExitPolicy.calibrate(smallcnn, mnist_like)
    assert policy.predict(smallcnn, mnist_like).exit_shares.tolist() == pytest.approx([21 / 64, 21 / 64, 22 / 64])
    policy = ExitPolicy.calibrate(smallcnn, mnist_like, method="shares", shares=[0.5, 0.25])
    assert np.bincount(policy.predict(smallcnn, mnist_like).exits, minlength=3).tolist() == [32, 16, 16]


def test_calibrate_to_target_cost(smallcnn, mnist_like):
    costs = flops.exit_costs(smallcnn)
    target = (costs[0] + costs[-1]) / 2
    policy = ExitPolicy.calibrate(smallcnn, mnist_like, method="target_cost", target_cost=target)
    result = policy.predict(smallcnn, mnist_like)
    assert result.mean_cost <= target
    assert result.mean_cost > target - (costs[-1] - costs[0]) / 8  # close to the budget, not trivially cheap
    paper = ExitPolicy.calibrate(smallcnn, mnist_like, method="target_cost", target_cost=5.0,
                                 convention="paper")
    assert paper.predict(smallcnn, mnist_like, convention="paper").mean_cost <= 5.0
    with pytest.raises(InputError, match="cost of the first exit"):
        ExitPolicy.calibrate(smallcnn, mnist_like, method="target_cost", target_cost=0.1)


def _between(values, share):
    """A threshold halfway between two neighbouring sorted ``values``, about ``share`` of them below it."""
    ordered = np.sort(values)
    i = int(share * len(ordered))
    return float((ordered[i - 1] + ordered[i]) / 2)


def test_predict_takes_the_exit_and_answer_of_the_rule_computed_in_numpy(smallcnn, mnist_like):
    logits = [np.asarray(z) for z in smallcnn(mnist_like)]
    entropies = oracle.entropies(logits)
    policy = ExitPolicy([_between(entropies[:, 0], 0.3), _between(entropies[:, 1], 0.6)])
    exits, predictions, _, _ = oracle.early_exit(logits, policy.thresholds)
    assert np.bincount(exits, minlength=3).min() >= 10  # every exit taken by a good share
    result = policy.predict(smallcnn, mnist_like)
    np.testing.assert_array_equal(result.exits, exits)
    np.testing.assert_array_equal(result.predictions, predictions)
    np.testing.assert_allclose(result.costs, flops.exit_costs(smallcnn)[exits])
    closed = ExitPolicy([0.0, policy.thresholds[1]]).predict(smallcnn, mnist_like)
    np.testing.assert_array_equal(closed.exits, oracle.early_exit(logits, [0.0, policy.thresholds[1]])[0])


def test_save_load_round_trip_keeps_outputs_and_thresholds(smallcnn, mnist_like, tmp_path):
    policy = ExitPolicy.calibrate(smallcnn, mnist_like)
    smallcnn.exit_policy = policy
    path = tmp_path / "model.keras"
    try:
        smallcnn.save(path)
    finally:
        smallcnn.exit_policy = None  # the model is shared by the session
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(restored.exit_policy.thresholds, policy.thresholds)
    for a, b in zip(restored.predict(mnist_like, verbose=0), smallcnn.predict(mnist_like, verbose=0)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(restored.exit_policy.predict(restored, mnist_like).exits,
                                  policy.predict(smallcnn, mnist_like).exits)


def test_policy_is_keras_serializable():
    policy = ExitPolicy([0.25, 1.5])
    config = keras.saving.serialize_keras_object(policy)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert type(restored) is ExitPolicy and restored.thresholds.tolist() == [0.25, 1.5]


def test_routed_logits_pick_each_samples_exit():
    logits = [np.full((3, 2), k, np.float32) for k in range(3)]
    routed = np.asarray(routed_logits(logits, np.array([2, 0, 1])))
    np.testing.assert_array_equal(routed, [[2, 2], [0, 0], [1, 1]])


@pytest.mark.parametrize("thresholds, message", [
    ([0.1], "2 thresholds"),
    ([0.1, float("nan")], "non-negative"),
    ([-0.1, 0.2], "non-negative"),
    ([], "one entropy threshold per side exit"),
])
def test_bad_thresholds(smallcnn, mnist_like, thresholds, message):
    with pytest.raises(InputError, match=message):
        ExitPolicy(thresholds).predict(smallcnn, mnist_like)


def test_bad_calibration_input(smallcnn):
    with pytest.raises(InputError, match=r"\(N, 28, 28, 1\)"):
        ExitPolicy.calibrate(smallcnn, np.zeros((4, 28, 28, 3), np.float32))
    with pytest.raises(InputError, match="2 non-negative fractions"):
        ExitPolicy.calibrate(smallcnn, np.zeros((4, 28, 28, 1), np.float32), method="shares",
                             shares=[0.9, 0.9])
    with pytest.raises(InputError, match="unknown calibration method"):
        ExitPolicy.calibrate(smallcnn, np.zeros((4, 28, 28, 1), np.float32), method="median")


def test_first_confident_exit_routes_under_several_policies_at_once():
    entropies = np.random.default_rng(0).random((20, 3))
    policies = np.array([[0.3, 0.6], [0.0, 0.9], [1.0, 1.0]])
    together = np.asarray(first_confident_exit(entropies, policies[:, None, :]))
    assert together.shape == (3, 20)
    for policy, exits in zip(policies, together):
        np.testing.assert_array_equal(exits, first_confident_exit(entropies, policy))


def _fooled_at_the_first_exit(num_samples=200, seed=0):
    """Clean images answer right everywhere; their attacked copies are confidently wrong at exit 1 only."""
    rng = np.random.default_rng(seed)
    clean = ExitOutcomes(rng.uniform(0.1, 1.5, (num_samples, 3)), np.ones((num_samples, 3), bool))
    attacked_entropies = np.column_stack([rng.uniform(0.15, 0.3, num_samples), rng.uniform(0.5, 0.7, num_samples),
                                          rng.uniform(0, 2, num_samples)])
    attacked = ExitOutcomes(attacked_entropies, np.array([[False, True, True]] * num_samples))
    return clean, attacked


def _accuracy_and_cost(outcomes, thresholds, costs):
    exits = np.asarray(first_confident_exit(outcomes.entropies, thresholds))
    return outcomes.correct[np.arange(len(exits)), exits].mean(), costs[exits].mean()


def test_robust_thresholds_close_the_exit_attacks_fool_within_the_budget():
    clean, attacked = _fooled_at_the_first_exit()
    costs = np.array([1.0, 2.0, 3.0])
    start = thresholds_for_counts(clean.entropies, [60, 60])  # what a cost-only calibration picks
    start_ata, start_cost = _accuracy_and_cost(attacked, start, costs)
    thresholds = robust_thresholds(clean, [attacked], costs, target_cost=2.0, starts=[start])
    ata, _ = _accuracy_and_cost(attacked, thresholds, costs)
    ta, cost = _accuracy_and_cost(clean, thresholds, costs)
    assert start_ata < 0.5 and start_cost <= 2.0
    assert ata == 1.0 and ta == 1.0 and cost <= 2.0  # exit 1 shut below 0.15, exit 2 takes the rest
    assert thresholds[0] < 0.15 < 0.7 < thresholds[1]


def test_robust_thresholds_respect_the_adversarial_budget_or_say_none_fits():
    clean, attacked = _fooled_at_the_first_exit()
    costs = np.array([1.0, 2.0, 3.0])
    thresholds = robust_thresholds(clean, [attacked], costs, target_cost=2.0, adversarial_cost=1.5)
    assert _accuracy_and_cost(attacked, thresholds, costs)[1] <= 1.5  # cheap attacked inputs cost accuracy
    assert _accuracy_and_cost(clean, thresholds, costs)[1] <= 2.0
    with pytest.raises(InputError, match="adversarial_cost=0.5 .*raise the budget"):
        robust_thresholds(clean, [attacked], costs, target_cost=2.0, adversarial_cost=0.5)


def test_each_calibration_is_a_classmethod_that_calibrate_names(smallcnn, mnist_like):
    budget = float(flops.exit_costs(smallcnn)[1])
    pairs = [(ExitPolicy.equal_share(smallcnn, mnist_like), ExitPolicy.calibrate(smallcnn, mnist_like)),
             (ExitPolicy.for_shares(smallcnn, mnist_like, [0.5, 0.25]),
              ExitPolicy.calibrate(smallcnn, mnist_like, "shares", shares=[0.5, 0.25])),
             (ExitPolicy.for_cost(smallcnn, mnist_like, budget, "paper"),
              ExitPolicy.calibrate(smallcnn, mnist_like, "target_cost", target_cost=budget, convention="paper"))]
    for direct, named in pairs:
        np.testing.assert_array_equal(direct.thresholds, named.thresholds)
    with pytest.raises(InputError, match="'equal_share' calibration does not take target_cost; it takes no options"):
        ExitPolicy.calibrate(smallcnn, mnist_like, target_cost=budget)
    with pytest.raises(InputError, match="'target_cost' calibration does not take shares; it takes target_cost, "
                                         "convention"):
        ExitPolicy.calibrate(smallcnn, mnist_like, "target_cost", shares=[0.5, 0.25], target_cost=budget)
    with pytest.raises(InputError, match="target_cost must be at least"):  # a needed option left out
        ExitPolicy.calibrate(smallcnn, mnist_like, "target_cost")


def test_robust_calibration_needs_labels_and_matching_adversarial_sets(smallcnn, mnist_like):
    with pytest.raises(InputError, match="needs labels=y and adversarial"):
        ExitPolicy.calibrate(smallcnn, mnist_like, method="robust", target_cost=8.0)
    with pytest.raises(InputError, match="one entry per calibration image"):
        ExitPolicy.calibrate(smallcnn, mnist_like, method="robust", target_cost=8.0, labels=np.zeros(64, int),
                             adversarial=[mnist_like[:10]])


def test_robust_thresholds_improve_the_next_worst_attack_when_the_worst_cannot_move():
    rng = np.random.default_rng(0)
    clean = ExitOutcomes(rng.uniform(0.1, 1.5, (100, 2)), np.ones((100, 2), bool))
    hopeless = ExitOutcomes(rng.uniform(0, 2, (100, 2)), np.zeros((100, 2), bool))  # wrong at every exit
    fooled_early = ExitOutcomes(np.column_stack([np.full(100, 0.2), rng.uniform(0, 2, 100)]),
                                np.array([[False, True]] * 100))
    thresholds = robust_thresholds(clean, [hopeless, fooled_early], np.array([1.0, 2.0]), target_cost=2.0,
                                   starts=[[1.6]])  # everything leaves at exit 1: the early attack fools all
    assert thresholds[0] <= 0.2  # the first exit closes to what the early attack brings there


def test_robust_calibration_beats_its_cost_only_start_on_a_crafted_model(smallcnn, monkeypatch):
    """Crafted logits: the attack makes exit 1 confidently wrong (entropy 0.15, below every clean exit-1 entropy)
    and leaves exits 2 and 3 right. The cost-only policy lets clean samples out at exit 1 and so every attacked
    one too (ATA 0); the robust policy closes exit 1 to the attacked entropies and answers from exit 2 within
    the budget (ATA 1). Scored with the numpy rule, not the library's routing."""
    rng = np.random.default_rng(0)
    count, classes = 200, 10
    labels = np.arange(count) % classes
    right, wrong = np.eye(classes)[labels], np.eye(classes)[(labels + 1) % classes]
    clean_logits = [right * rng.uniform(0, 4, (count, 1)), right * rng.uniform(0, 8, (count, 1)), right * 3.0]
    attacked_logits = [wrong * 6.0, right * 6.0, right * 3.0]
    clean_images, attacked_images = np.zeros((count, 28, 28, 1), np.float32), np.ones((count, 28, 28, 1), np.float32)

    def crafted(model, images, batch_size=256):
        return [z.astype(np.float32) for z in (clean_logits if images is clean_images else attacked_logits)]

    monkeypatch.setattr(policy_module, "predict_exit_logits", crafted)
    costs = flops.exit_costs(smallcnn)
    budget = float(costs[1] + 0.25 * (costs[2] - costs[1]))  # room for all at exit 2, not all at exit 3
    start = ExitPolicy.calibrate(smallcnn, clean_images, "target_cost", target_cost=budget)
    robust = ExitPolicy.calibrate(smallcnn, clean_images, "robust", target_cost=budget, labels=labels,
                                  adversarial=[attacked_images])

    def scores(thresholds):
        clean_exits, clean_predictions, _, _ = oracle.early_exit(clean_logits, thresholds)
        _, attacked_predictions, _, _ = oracle.early_exit(attacked_logits, thresholds)
        return costs[clean_exits].mean(), np.mean(attacked_predictions == labels), np.mean(clean_predictions == labels)

    start_cost, start_ata, _ = scores(start.thresholds)
    robust_cost, robust_ata, robust_ta = scores(robust.thresholds)
    assert start_cost <= budget and start_ata < 0.5
    assert robust_cost <= budget * (1 + 1e-9) and robust_ata == 1.0 and robust_ta == 1.0
