"""NEO-KD distillation (rdinet_tf.training.distillation), its place in RDI training, and the exit transfer rates."""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import data, models
from rdinet_tf import evaluation
from rdinet_tf import attacks
from rdinet_tf.training.distillation import NeoKD, deal_wrong_classes
from rdinet_lite.errors import InputError


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl(p, q):
    return np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0.0), -1)


def test_wrong_classes_are_dealt_to_one_exit_each_evenly_and_afresh_per_sample():
    labels = np.arange(200) % 10
    dealt = deal_wrong_classes(labels, 10, 3, tf.constant([4, 1])).numpy()
    assert (dealt[np.arange(200), labels] == -1).all()
    wrong = dealt[np.arange(10)[None] != labels[:, None]].reshape(200, 9)
    counts = np.stack([(wrong == k).sum(-1) for k in range(3)], -1)
    assert (counts == 3).all()  # 9 wrong classes over 3 exits: 3 each, every class dealt once
    assert len({tuple(row) for row in dealt}) > 100  # a random order per sample
    again = deal_wrong_classes(labels, 10, 3, tf.constant([4, 1])).numpy()
    other = deal_wrong_classes(labels, 10, 3, tf.constant([5, 1])).numpy()
    np.testing.assert_array_equal(dealt, again)
    assert (dealt != other).any()
    uneven = deal_wrong_classes(labels[:20], 10, 4, tf.constant([0, 0])).numpy()  # 9 over 4: 3/2/2/2
    assert sorted((uneven[0] == k).sum() for k in range(4)) == [2, 2, 2, 3]


def test_neo_kd_loss_is_the_papers_two_kl_terms():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 32)
    clean = [rng.normal(size=(32, 10)).astype(np.float32) * 3 for _ in range(3)]
    adversarial = [rng.normal(size=(32, 10)).astype(np.float32) * 3 for _ in range(3)]
    weights, seed, sample_weight = [1.0, 0.5, 2.0], tf.constant([7, 1]), rng.random(32).astype(np.float32)
    dealt = deal_wrong_classes(labels, 10, 3, seed).numpy()
    p = [softmax(z) for z in clean]
    q = [softmax(z) for z in adversarial]
    expected = 0.0
    for k, w in enumerate(weights):
        neighbours = p[max(k - 1, 0):k + 2]
        nkd = kl(sum(neighbours) / len(neighbours), q[k])
        kept = p[k] * ((dealt == k) | (dealt == -1))
        eokd = kl(kept / kept.sum(-1, keepdims=True), q[k])
        expected += w * (np.mean(sample_weight * nkd) * 2.0 + np.mean(sample_weight * eokd) * 0.5)
    loss = NeoKD(2.0, 0.5).loss(labels, clean, adversarial, weights, seed, sample_weight)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert float(NeoKD(1.0, 0.0).loss(labels, clean, clean, weights, seed)) > 0  # neighbours differ from self


def test_teachers_are_constants_and_the_student_is_the_adversarial_output():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 8)
    clean = [tf.Variable(rng.normal(size=(8, 10)).astype(np.float32)) for _ in range(3)]
    adversarial = [tf.Variable(rng.normal(size=(8, 10)).astype(np.float32)) for _ in range(3)]
    with tf.GradientTape() as tape:
        loss = NeoKD().loss(labels, clean, adversarial, [1.0, 1.0, 1.0], tf.constant([0, 1]))
    gradients = tape.gradient(loss, clean + adversarial)
    assert all(g is None for g in gradients[:3])
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients[3:])
    silent = NeoKD().loss(labels, clean, adversarial, [0.0, 1.0, 0.0], tf.constant([0, 1]))
    middle = NeoKD().loss(labels, clean, adversarial, [1.0, 1.0, 1.0], tf.constant([0, 1]))
    assert 0 < float(silent) < float(middle)  # a zero exit weight drops that exit's terms


@pytest.mark.parametrize("make, message", [
    (lambda: NeoKD(-1.0, 1.0), "non-negative finite weights"),
    (lambda: NeoKD(0.0, 0.0), "not both 0"),
    (lambda: NeoKD(float("nan"), 1.0), "non-negative finite weights"),
    (lambda: models.build("smallcnn").compile(defense="none", distillation="neo_kd"), "other than 'none'"),
    (lambda: models.build("smallcnn").compile(defense="main", attack=attacks.fgsm(0.1), distillation="nkd"),
     "distillation must be None, 'neo_kd' or a NeoKD"),
])
def test_bad_distillation_settings_are_refused(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_fit_with_neo_kd_logs_its_term_and_a_saved_model_keeps_it(digits, tmp_path):
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), defense="max_average", attack=attacks.fgsm(0.2),
                  distillation=NeoKD(1.5, 0.5))
    batches = data.make_dataset(digits.x_train[:128], digits.y_train[:128], 32)
    history = model.fit(batches, epochs=2, verbose=0)
    assert history.history["distillation_loss"][0] > 0
    assert history.history["distillation_loss"][1] < history.history["distillation_loss"][0]
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*compile")
        loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.distillation == NeoKD(1.5, 0.5)
    assert "distillation_loss" in loaded.fit(batches, epochs=1, verbose=0).history
    plain = models.build("smallcnn")
    plain.compile(defense="max_average", attack=attacks.fgsm(0.2))
    assert "distillation_loss" not in plain.fit(batches.take(1), verbose=0).history


def test_train_cli_passes_neo_kd_to_compile(train_compile_arguments):
    compiled = train_compile_arguments(["--dataset", "digits", "--neo-kd", "2,0.5"])
    assert compiled["distillation"] == NeoKD(2.0, 0.5)
    assert train_compile_arguments(["--dataset", "digits"])["distillation"] is None


def test_transfer_rates_count_the_shared_successes_of_single_exit_attacks():
    labels = np.array([0, 0, 0, 0])
    right, wrong = np.array([5.0, 0.0]), np.array([0.0, 5.0])
    clean = [np.stack([right, right, right, wrong]), np.stack([right] * 4)]
    # The exit-1 attack fools exit 1 on samples 0-2 (sample 3 is wrong clean); exit 2 also on sample 0 only.
    on_exit_1 = [np.stack([wrong, wrong, wrong, wrong]), np.stack([wrong, right, right, right])]
    # The exit-2 attack fools exit 2 on samples 0, 1; exit 1 on both of them.
    on_exit_2 = [np.stack([wrong, wrong, right, wrong]), np.stack([wrong, wrong, right, right])]
    rates = evaluation.transfer_rates(labels, clean, [on_exit_1, on_exit_2])
    np.testing.assert_allclose(rates, [[1.0, 1 / 3], [1.0, 1.0]])
    np.testing.assert_array_equal(evaluation.transfer_counts(labels, clean, [on_exit_1, on_exit_2])[1], [[3, 3], [2, 2]])
    none_fooled = evaluation.transfer_rates(labels, clean, [clean, clean])
    assert np.isnan(none_fooled).all()


def test_report_gives_the_transfer_matrix_of_its_single_exit_attacks(digits_model, digits):
    report = evaluation.robustness_report(digits_model, digits.x_test[:64], digits.y_test[:64], [attacks.PGD(0.3, 0.05, 5)],
                                        objectives=["exit_1", "exit_2", "exit_3", "average"], progress=False,
                                        slowdown=False)
    rates = np.array(report.exit_transfer["pgd"])
    assert rates.shape == (3, 3)
    np.testing.assert_array_equal(np.diag(rates)[~np.isnan(np.diag(rates))], 1.0)
    assert np.nanmax(rates - np.eye(3)) > 0  # the attacks transfer, in part
    assert "Transfer of the pgd attack" in report.table()
    assert np.array(report.exit_transfer_counts["pgd"]).shape == (3, 3)
    assert np.array(json.loads(json.dumps(report.to_dict()))["exit_transfer"]["pgd"]).shape == (3, 3)
    partial = evaluation.robustness_report(digits_model, digits.x_test[:16], digits.y_test[:16], [attacks.PGD(0.3, 0.05, 2)],
                                         objectives=["exit_1", "average"], progress=False, slowdown=False)
    assert partial.exit_transfer == {}  # only with every single-exit attack
