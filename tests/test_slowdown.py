import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import data, models
from rdinet_tf import evaluation
from rdinet_tf.architecture import flops
from rdinet_tf import attacks
from rdinet_tf.cli import train
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import ExitPolicy, exit_entropies


@pytest.fixture(scope="module")
def trained(digits_model):
    return digits_model


def side_entropy(model, images):
    return float(np.mean(exit_entropies(model(images))[:, :-1]))


def mean_cost(model, images):
    return model.exit_policy.predict(model, np.asarray(images)).mean_cost


def test_slowdown_raises_side_exit_entropy_and_cost_beyond_noise(trained, digits):
    model = trained
    images, labels = digits.x_test[:128], digits.y_test[:128]
    slowdown = attacks.attack_function(model, attacks.PGD(0.2, 0.03, 10), "slowdown")(images, labels, 0).numpy()
    noise = attacks.generate(model, images, labels, attacks.RandomNoise(0.2), "slowdown", seed=0).numpy()
    assert np.abs(slowdown - images).max() <= 0.2 + 1e-6
    assert slowdown.min() >= 0.0 and slowdown.max() <= 1.0
    assert side_entropy(model, slowdown) > max(side_entropy(model, images), side_entropy(model, noise)) + 0.3
    clean_cost, noise_cost, attacked_cost = (mean_cost(model, x) for x in (images, noise, slowdown))
    assert attacked_cost > max(clean_cost, noise_cost) + 1.0
    assert attacked_cost <= flops.exit_costs(model)[-1] + 1e-6


def test_slowdown_loss_is_the_mean_side_exit_entropy_and_ignores_labels(trained, digits):
    model = trained
    images = tf.constant(digits.x_test[:8])
    loss = attacks.objective_loss(model, "slowdown")(images, None).numpy()
    expected = np.asarray(exit_entropies(model(images)))[:, :-1].mean(axis=1)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="needs a model with side exits"):
        attacks.check_objective("slowdown", 1)


def test_universal_slowdown_is_one_bounded_tensor_that_slows_held_out_images(trained, digits):
    model = trained
    perturbation = attacks.universal_slowdown(model, digits.x_val, 0.2, steps=40, step_size=0.02,
                                                batch_size=32, seed=0)
    assert tuple(perturbation.shape) == model.image_shape
    assert float(tf.reduce_max(tf.abs(perturbation))) <= 0.2 + 1e-6
    held_out, labels = digits.x_test[:128], digits.y_test[:128]
    attacked = np.clip(held_out + perturbation.numpy(), 0.0, 1.0)
    noise = attacks.RandomNoise(0.2).perturb(None, held_out, labels, [0, 0]).numpy()
    assert mean_cost(model, attacked) > max(mean_cost(model, held_out), mean_cost(model, noise)) + 0.3


def test_slowdown_term_adds_weight_times_its_tracker_to_the_loss(digits):
    batches = data.make_dataset(digits.x_train[:64], digits.y_train[:64], 64)
    histories = {}
    for weight in (0.0, 2.0):
        keras.utils.set_random_seed(0)
        model = models.build("smallcnn")
        model.compile(optimizer=keras.optimizers.Adam(1e-3), defense="none", slowdown_weight=weight,
                      slowdown_attack=attacks.PGD(0.3, 0.1, 2), run_eagerly=weight == 0)  # graph with the term
        histories[weight] = model.fit(batches, epochs=1, verbose=0).history
    assert "slowdown_loss" not in histories[0.0]
    tracked = histories[2.0]["slowdown_loss"][0]
    assert tracked > 0.1
    assert histories[2.0]["loss"][0] == pytest.approx(histories[0.0]["loss"][0] + 2.0 * tracked, rel=1e-4)
    assert "slowdown_loss" not in model.evaluate(batches, return_dict=True, verbose=0)


def test_slowdown_loss_is_side_exit_ce_counting_samples_the_last_exit_gets_right():
    model = models.build("smallcnn")
    model.compile(defense="none", exit_weights=[1.0, 0.5, 3.0], slowdown_weight=1.0,
                  slowdown_attack=attacks.fgsm(0.1))
    labels = np.array([0, 1, 2])
    clean = [None, None, tf.constant([[5.0, 0, 0], [5.0, 0, 0], [0, 0, 5.0]])]  # last exit: right, wrong, right
    side = [tf.constant([[1.0, 0, 0], [0, 9.0, 0], [0, 2.0, 0]]), tf.constant([[0, 0, 1.0], [9.0, 0, 0], [0, 0, 4.0]])]
    ce = [attacks.cross_entropy(labels, z).numpy() for z in side]
    expected = 1.0 * (ce[0][0] + ce[0][2]) / 3 + 0.5 * (ce[1][0] + ce[1][2]) / 3
    assert float(model.slowdown_loss(labels, clean, side)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(InputError, match="slowdown_weight needs an attack"):
        model.compile(defense="none", slowdown_weight=1.0)
    with pytest.raises(InputError, match="slowdown_weight must be >= 0"):
        model.compile(defense="none", slowdown_weight=-1.0)


def test_savings_kept():
    assert evaluation.savings_kept(10.0, 6.0, 6.0) == 1.0
    assert evaluation.savings_kept(10.0, 6.0, 8.0) == pytest.approx(0.5)
    assert evaluation.savings_kept(10.0, 6.0, 10.0) == 0.0
    assert evaluation.savings_kept(10.0, 10.0, 10.0) is None


def test_report_gives_the_slowdown_cost_and_savings_kept_in_both_conventions(trained, digits):
    model = trained
    report = evaluation.robustness_report(model, digits.x_test[:64], digits.y_test[:64],
                                        [attacks.PGD(0.2, 0.03, 5), attacks.RandomNoise(0.2)],
                                        objectives=["exit_1"], progress=False)
    saved = json.loads(json.dumps(report.to_dict()))
    assert [s["name"] for s in saved["slowdown"]] == ["pgd slowdown", "pgd threshold_slowdown",
                                                       "random_noise slowdown", "random_noise threshold_slowdown"]
    pgd, _, noise, _ = saved["slowdown"]
    clean = saved["clean"]
    for result in (pgd, noise):
        for key in ("mflops", "full_mflops"):
            assert result[key] > 0 and result[f"paper_{key}"] > 0
        assert result["savings_kept"] >= 0 and result["paper_savings_kept"] >= 0  # > 1: cheaper than clean
        assert result["savings_kept"] == pytest.approx(
            (result["full_mflops"] - result["mflops"]) / (result["full_mflops"] - clean["mflops"]))
        paper_full = result["paper_full_mflops"]
        assert result["paper_savings_kept"] == pytest.approx(
            (paper_full - result["paper_mflops"]) / (paper_full - clean["paper_mflops"]))
    assert pgd["mflops"] > noise["mflops"] > clean["mflops"] - 0.5
    assert pgd["savings_kept"] < noise["savings_kept"]
    assert len(saved["attacks"]) == 2 and saved["autoattack"] is None  # slowdown is reported apart
    assert "savings kept" in report.table() and "pgd slowdown" in report.table()
    without = evaluation.robustness_report(model, digits.x_test[:16], digits.y_test[:16], [attacks.RandomNoise(0.2)],
                                         objectives=["exit_1"], progress=False, slowdown=False)
    assert without.slowdown == []


def test_report_skips_slowdown_and_exit_hijack_when_every_side_exit_is_closed(trained, digits):
    closed = ExitPolicy([0.0] * (trained.num_exits - 1))  # a single-exit baseline: no savings to attack
    assert "exit_hijack" not in evaluation.default_objectives(trained, closed)
    assert "exit_hijack" in evaluation.default_objectives(trained, trained.exit_policy)
    report = evaluation.robustness_report(trained, digits.x_test[:16], digits.y_test[:16], [attacks.RandomNoise(0.2)],
                                        policy=closed, objectives=["routing"], progress=False)
    assert report.slowdown == [] and [a.name for a in report.attacks] == ["random_noise routing"]


def test_train_cli_passes_the_slowdown_weight_to_compile(train_compile_arguments, tmp_path, cli_error):
    compiled = train_compile_arguments(["--dataset", "digits", "--slowdown-weight", "0.5"])
    assert compiled["slowdown_weight"] == 0.5 and compiled["slowdown_attack"] is None
    assert train.parse_args([]).slowdown_weight == 0.0
    compiled = train_compile_arguments(["--dataset", "digits", "--slowdown-weight", "1", "--slowdown-attack-steps", "4",
                                        "--eps", "0.2"])
    assert compiled["slowdown_attack"] == attacks.PGD(0.2, 0.125, 4)
    with pytest.raises(InputError, match="together with --slowdown-weight"):
        train.run(train.parse_args(["--dataset", "digits", "--slowdown-attack-steps", "4", "--out", str(tmp_path)]))
    message = cli_error(train.main, ["--dataset", "digits", "--slowdown-weight", "1",
                                     "--slowdown-attack-steps", "0", "--out", str(tmp_path)])
    assert message.startswith("argument --slowdown-attack-steps: must be >= 1; got 0")
    assert not any(tmp_path.iterdir())
