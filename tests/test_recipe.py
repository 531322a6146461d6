"""The time-to-robust-accuracy recipe: one-cycle schedule, N-FGSM, the catastrophic-overfitting guard, --recipe fast,
and a resumed run that is the uninterrupted run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import data, models
from rdinet_tf import attacks
from rdinet_tf.cli import train
from rdinet_lite.errors import InputError
from rdinet_tf.training.guard import CatastrophicOverfittingGuard
from rdinet_tf.training import OneCycle, ReferenceSGD

HARNESS = Path(__file__).with_name("train_harness.py")


def test_one_cycle_rises_linearly_to_its_peak_then_falls_to_zero():
    schedule = OneCycle(peak=0.2, total_steps=100, peak_at=0.4)
    steps = np.arange(0, 121)
    values = np.array([float(schedule(s)) for s in steps])
    expected = np.where(steps <= 40, 0.2 * steps / 40, 0.2 * np.clip((100 - steps) / 60, 0, 1))
    np.testing.assert_allclose(values, expected, atol=1e-7)
    assert values.argmax() == 40 and values[100:].max() == 0


def _schedule(optimizer):
    return keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])


def test_one_cycle_round_trips_through_keras_serialisation_inside_its_optimizer():
    optimizer = ReferenceSGD(OneCycle(0.1, 50, 0.3), momentum=0.9, weight_decay=5e-4)
    schedule = _schedule(keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)))
    assert isinstance(schedule, OneCycle)
    assert (schedule.peak, schedule.total_steps, schedule.peak_at) == (0.1, 50, 0.3)
    assert float(schedule(15)) == pytest.approx(0.1)
    for bad in [dict(peak=0, total_steps=10), dict(peak=0.1, total_steps=0), dict(peak=0.1, total_steps=10, peak_at=1)]:
        with pytest.raises(InputError, match="OneCycle needs"):
            OneCycle(**bad)


def test_n_fgsm_steps_eps_from_noise_up_to_two_eps_without_projection():
    images = np.full((4, 8, 8, 1), 0.5, np.float32)
    gradient_sign = np.sign(np.random.default_rng(0).standard_normal(images.shape)).astype(np.float32)

    def loss(x, y):  # its gradient's sign is gradient_sign everywhere
        return tf.reduce_sum(tf.reshape(x * gradient_sign, [4, -1]), axis=1)

    method = attacks.NFGSM(0.1)
    assert (method.noise, method.step_size) == pytest.approx((0.2, 0.1))
    adversarial = method.perturb(loss, images, None, tf.constant([3, 4])).numpy()
    noise = attacks.uniform_noise(tf.constant(images), tf.constant([3, 4]), 0.2).numpy()
    np.testing.assert_allclose(adversarial, np.clip(images + noise + 0.1 * gradient_sign, 0, 1), atol=1e-6)
    assert np.abs(adversarial - images).max() > 0.1 + 1e-3  # beyond the eps-ball: no projection
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method)) == method


def _digits_model(digits):
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), defense="none")
    return model


class _SpikeLearningRate(keras.callbacks.Callback):
    """Sets a ruinous learning rate from epoch ``at`` on: a run made to collapse."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            self.model.optimizer.learning_rate.assign(50.0)


class _WeightsPerEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def _fit_with_guard(digits, callbacks, epochs=4, state_dir=None):
    model = _digits_model(digits)
    guard = CatastrophicOverfittingGuard(digits.x_val[:96], digits.y_val[:96], attacks.PGD(0.05, 0.02, 3),
                                         state_dir=state_dir, verbose=0)
    recorder = _WeightsPerEpoch()
    history = model.fit(data.make_dataset(digits.x_train, digits.y_train, 64, shuffle=True, seed=0),
                        epochs=epochs, verbose=0, callbacks=[*callbacks, recorder, guard])
    return model, guard, recorder, history


def _mean_pgd(history):
    return history.history["val_pgd_accuracy"]


def test_the_guard_stops_a_collapsing_run_and_restores_its_best_epoch(digits, tmp_path):
    model, guard, recorder, history = _fit_with_guard(digits, [_SpikeLearningRate(at=2)], state_dir=tmp_path)
    pgd = _mean_pgd(history)
    assert len(pgd) == 3 and guard.stopped_epoch == 3  # epochs are 1-based: stopped after the third
    assert pgd[2] < 0.5 * max(pgd[:2]) and max(pgd[:2]) - pgd[2] >= 0.1  # the documented rule held
    assert guard.best_epoch == 1 + int(np.argmax(pgd[:2]))
    for restored, best in zip(model.get_weights(), recorder.weights[guard.best_epoch - 1]):
        np.testing.assert_array_equal(restored, best)
    for k in range(model.num_exits):
        assert len(history.history[f"val_exit_{k + 1}_pgd_accuracy"]) == 3
    assert np.mean([history.history[f"val_exit_{k + 1}_pgd_accuracy"][0] for k in range(3)]) == pytest.approx(pgd[0])
    report = guard.report()
    assert report["restored_epoch"] == guard.best_epoch and report["stopped_epoch"] == 3
    state = json.loads((tmp_path / "guard.json").read_text())
    assert state["stopped_epoch"] == 3
    fresh = _digits_model(digits)
    reloaded = CatastrophicOverfittingGuard(digits.x_val[:96], digits.y_val[:96], attacks.PGD(0.05, 0.02, 3),
                                            state_dir=tmp_path)
    assert reloaded.load_state() and reloaded.best_epoch == guard.best_epoch
    reloaded.restore_best(fresh)  # a resumed process restores the same weights from the state folder
    for restored, best in zip(fresh.get_weights(), recorder.weights[guard.best_epoch - 1]):
        np.testing.assert_array_equal(restored, best)


def test_the_guard_does_nothing_on_a_healthy_run(digits):
    model, guard, recorder, history = _fit_with_guard(digits, [], epochs=3)
    assert len(_mean_pgd(history)) == 3 and not guard.acted and guard.stopped_epoch == 0
    assert max(_mean_pgd(history)) > 0.2  # the attack leaves something to guard
    for final, last in zip(model.get_weights(), recorder.weights[-1]):
        np.testing.assert_array_equal(final, last)


def test_the_guard_counts_only_the_exits_the_model_trains(digits, monkeypatch):
    model = models.build("smallcnn")
    model.compile(optimizer="sgd", defense="none", exit_weights=[0, 0, 1])
    guard = CatastrophicOverfittingGuard(digits.x_val[:8], digits.y_val[:8], attacks.PGD(0.1, 0.05, 1), verbose=0)
    guard.set_model(model)
    monkeypatch.setattr(guard, "exit_accuracies", lambda: np.array([0.0, 0.1, 0.8]))
    logs = {}
    guard.on_epoch_end(0, logs)
    assert logs["val_pgd_accuracy"] == pytest.approx(0.8) and logs["val_exit_1_pgd_accuracy"] == 0.0
    model.compile(optimizer="sgd", defense="none")  # every exit trained: the plain mean
    guard.on_epoch_end(1, logs)
    assert logs["val_pgd_accuracy"] == pytest.approx(0.3)


def test_the_guard_refuses_an_empty_batch_and_bad_thresholds():
    with pytest.raises(InputError, match="non-empty held-out batch"):
        CatastrophicOverfittingGuard(np.zeros((0, 28, 28, 1)), np.zeros(0), attacks.PGD(0.1, 0.01, 2))
    with pytest.raises(InputError, match="max_drop"):
        CatastrophicOverfittingGuard(np.zeros((2, 28, 28, 1)), np.zeros(2), attacks.PGD(0.1, 0.01, 2), max_drop=0)


def test_recipe_fast_picks_the_recipe_and_every_setting_can_be_overridden(train_compile_arguments):
    compiled = train_compile_arguments(["--model", "smallcnn", "--dataset", "digits", "--recipe", "fast"])
    recipe = models.MODELS["smallcnn"].fast_recipe
    assert compiled["attack"] == attacks.fast_fgsm(0.3)
    schedule = _schedule(compiled["optimizer"])
    assert isinstance(schedule, OneCycle) and schedule.peak == recipe.peak_learning_rate
    assert compiled["optimizer"].l2_decay == recipe.weight_decay
    overridden = train_compile_arguments(["--model", "smallcnn", "--dataset", "digits", "--recipe", "fast",
                                          "--lr", "0.01", "--train-attack", "n_fgsm", "--epochs", "2"])
    assert overridden["attack"] == attacks.NFGSM(0.3) and _schedule(overridden["optimizer"]).peak == 0.01
    paper = train_compile_arguments(["--model", "smallcnn", "--dataset", "digits"])
    assert isinstance(paper["attack"], attacks.PGD) and paper["attack"].steps == 40
    assert not isinstance(_schedule(paper["optimizer"]), OneCycle)


def test_resnet38_fast_recipe_trains_with_n_fgsm():
    assert models.MODELS["resnet38"].fast_recipe.training_attack(8 / 255) == attacks.NFGSM(8 / 255)


@pytest.mark.parametrize("argv, message", [
    (["--fast", "--train-attack", "n_fgsm"], "contradicts --train-attack n_fgsm"),
    (["--train-attack", "n_fgsm", "--attack-steps", "5"], "takes one step"),
])
def test_contradicting_training_attack_settings_are_refused(argv, message, tmp_path, cli_error):
    out = tmp_path / "run"
    assert message in cli_error(train.main, ["--dataset", "digits", "--recipe", "fast", *argv, "--out", str(out)])
    assert not out.exists()


RUN = ["--model", "smallcnn", "--dataset", "digits", "--recipe", "fast", "--defense", "max_average", "--epochs", "3",
       "--steps-per-epoch", "3", "--batch-size", "32", "--eval-attack-steps", "1", "--eval-samples", "16",
       "--eval-objectives", "exit_3", "--quiet"]


def _harness(tmp_path, name, extra=(), env=None):
    dump = tmp_path / f"{name}.npz"
    result = subprocess.run([sys.executable, str(HARNESS), str(dump), *RUN, *extra, "--out", str(tmp_path / name)],
                            env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)
    return result, dump


def _state(dump):
    with np.load(dump) as stored:
        return {key: stored[key] for key in stored.files}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted run of each defense, dropout kept, made once for the tests that compare against it."""
    runs = {}

    def run(defense):
        if defense not in runs:
            root = tmp_path_factory.mktemp(f"whole_{defense}")
            result, dump = _harness(root, "whole", ["--defense", defense], env={"HARNESS_KEEP_DROPOUT": "1"})
            assert result.returncode == 0, result.stderr[-2000:]
            runs[defense] = root / "whole", dump
        return runs[defense]

    return run


def test_the_summary_records_the_recipe_per_epoch_accuracies_and_the_guard(uninterrupted):
    out, _ = uninterrupted("max_average")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"]["name"] == "fast" and summary["recipe"]["schedule"] == "one-cycle"
    assert summary["recipe"]["epochs"] == 3 and summary["recipe"]["total_steps"] == 9
    assert summary["recipe"]["attack"] == "fast_fgsm"
    assert summary["guard"]["stopped_epoch"] == 0 and summary["guard"]["samples"] > 0
    for k in (1, 2, 3):
        assert len(summary["history"][f"val_exit_{k}_acc"]) == 3
        assert len(summary["history"][f"val_exit_{k}_pgd_accuracy"]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "summary.json"]


@pytest.mark.slow
@pytest.mark.parametrize("kill_after, defense", [("0", "max_average"), ("1", "max_average"), ("0", "routing")])
def test_a_killed_and_resumed_run_is_the_uninterrupted_run(tmp_path, uninterrupted, kill_after, defense):
    """Weights, optimizer state (momentum, iterations: the schedule's position and the attack seeds) and the
    per-epoch logs (which follow the input stream, and the thresholds a policy-aware defense follows) are
    bit-identical, dropout included."""
    extra = ["--defense", defense]
    whole_out, whole_dump = uninterrupted(defense)
    killed, _ = _harness(tmp_path, "resumed", extra, env={"HARNESS_KILL_AFTER_EPOCH": kill_after,
                                                           "HARNESS_KEEP_DROPOUT": "1"})
    assert killed.returncode == 17, killed.stderr[-2000:]
    resumed, resumed_dump = _harness(tmp_path, "resumed", extra, env={"HARNESS_KEEP_DROPOUT": "1"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, actual = _state(whole_dump), _state(resumed_dump)
    assert sorted(expected) == sorted(actual) and any(key.startswith("optimizer_") for key in expected)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    histories = [json.loads((out / "summary.json").read_text())["history"] for out in (whole_out, tmp_path / "resumed")]
    assert histories[0] == histories[1]
