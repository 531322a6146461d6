import json
import re
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

from rdinet_tf import data, models
from rdinet_tf import attacks
from rdinet_tf.cli import evaluate, train
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import ExitPolicy
from rdinet_tf.training import learning_rate_schedule, rdi_loss


def small_batches(splits, count=256, batch_size=64):
    return data.make_dataset(splits.x_train[:count], splits.y_train[:count], batch_size)


@pytest.mark.parametrize("defense", ["none", "main", "average", "max_average"])
def test_fit_reports_per_exit_metrics_in_history(digits, defense):
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), defense=defense,
                  attack=attacks.PGD(0.3, 0.1, 2))
    history = model.fit(small_batches(digits), epochs=2, verbose=0,
                        validation_data=small_batches(digits, 64))
    expected = {"loss", "exit_1_acc", "exit_2_acc", "exit_3_acc",
                "val_loss", "val_exit_1_acc", "val_exit_2_acc", "val_exit_3_acc"}
    if defense != "none":
        expected |= {"exit_1_adv_acc", "exit_2_adv_acc", "exit_3_adv_acc"}
    assert set(history.history) == expected
    assert history.history["loss"][1] < history.history["loss"][0]
    assert history.history["exit_1_acc"][1] > 0.15  # learning, and not a silent 0.0
    result = model.evaluate(small_batches(digits, 64), return_dict=True, verbose=0)
    assert set(result) == {"loss", "exit_1_acc", "exit_2_acc", "exit_3_acc"}


def test_rdi_loss_is_the_weighted_clean_plus_adversarial_sum(digits):
    model = models.build("smallcnn")
    model.compile(defense="average", attack=attacks.fgsm(0.1), exit_weights=[1.0, 0.5, 2.0])
    images, labels = digits.x_train[:16], digits.y_train[:16]
    clean, adversarial = model(images), model(images[::-1])
    ce = [np.mean(attacks.cross_entropy(labels, z).numpy()) for z in clean]
    ce_adv = [np.mean(attacks.cross_entropy(labels, z).numpy()) for z in adversarial]
    expected = sum(w * (0.5 * a + 0.5 * b) for w, a, b in zip([1.0, 0.5, 2.0], ce, ce_adv))
    assert float(model.rdi_loss(labels, clean, adversarial)) == pytest.approx(expected, rel=1e-5)
    assert float(rdi_loss(labels, clean, adversarial, [1.0, 0.5, 2.0], 0.5)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # 4 epochs of max-average adversarial training: the longest fit of the suite
def test_adversarial_training_makes_the_model_more_robust(digits, train_digits):
    """Same budget, same seed: PGD training beats clean training under PGD."""
    robust_accuracy = {}
    test_x, test_y = digits.x_test[:160], digits.y_test[:160]
    for defense in ("none", "max_average"):
        model = train_digits(defense, attacks.fast_fgsm(0.1))
        adversarial = attacks.generate(model, test_x, test_y, attacks.PGD(0.1, 0.025, 10), "exit_2")
        robust_accuracy[defense] = np.mean(np.argmax(model.exit_logits(adversarial, [1])[0], -1) == test_y)
    assert robust_accuracy["max_average"] > robust_accuracy["none"] + 0.15


def test_compile_rejects_bad_settings():
    model = models.build("smallcnn")
    with pytest.raises(InputError, match="unknown defense 'pgd'"):
        model.compile(defense="pgd", attack=attacks.fgsm(0.1))
    with pytest.raises(InputError, match="needs an attack"):
        model.compile(defense="average")
    with pytest.raises(InputError, match="3 non-negative numbers"):
        model.compile(defense="none", exit_weights=[1, 1])


def test_loaded_model_keeps_its_compile_settings_and_optimizer_state(digits, tmp_path):
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), defense="average",
                  attack=attacks.PGD(0.3, 0.1, 2), exit_weights=[1, 0.5, 2], seed=3,
                  slowdown_weight=0.5, slowdown_attack=attacks.fgsm(0.2))
    model.fit(small_batches(digits, 64, 32), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*compile")  # Keras warns when it cannot restore compile()
        loaded = keras.models.load_model(tmp_path / "model.keras")
    settings = ("defense", "attack", "exit_weights", "adversarial_weight", "attack_seed", "slowdown_weight",
                "slowdown_attack")
    assert [getattr(loaded, s) for s in settings] == [getattr(model, s) for s in settings]
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(saved, restored)
    history = loaded.fit(small_batches(digits, 64, 32), epochs=1, verbose=0)
    assert "exit_3_adv_acc" in history.history and "slowdown_loss" in history.history
    assert int(loaded.optimizer.iterations) == 4


def test_learning_rate_schedule_scales_the_reference_boundaries():
    schedule = learning_rate_schedule(models.MODELS["smallcnn"].paper_recipe, 131)
    assert float(schedule(0)) == pytest.approx(0.033)
    assert float(schedule(118)) == pytest.approx(0.0033)
    assert float(schedule(130)) == pytest.approx(0.00033)


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from rdinet_tf import data, models
    from rdinet_tf import attacks
    splits = data.load("digits")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = models.build("smallcnn")
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), defense="max_average",
                      attack=attacks.PGD(0.3, 0.1, 2))
    history = model.fit(data.make_dataset(splits.x_train[:256], splits.y_train[:256], 64),
                        epochs=2, verbose=0)
    json.dump({"replicas": strategy.num_replicas_in_sync, "history": history.history}, sys.stdout)
""")


@pytest.mark.slow
def test_train_step_runs_under_mirrored_strategy_on_two_cpus():
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["replicas"] == 2
    history = summary["history"]
    assert history["loss"][1] < history["loss"][0]
    assert all(history[f"exit_{k}_adv_acc"][-1] > 0 for k in (1, 2))


def test_train_cli_writes_model_and_summary_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--model", "smallcnn", "--dataset", "digits", "--defense", "main", "--fast",
            "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "32",
            "--eval-attack-steps", "2", "--eval-samples", "40", "--eval-objectives", "exit_1,main",
            "--out", str(out), "--quiet"]

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.run(train.parse_args(argv), callbacks=[Interrupt()])
    assert not (out / "model.keras").exists() and (out / "backup").exists()

    class Epochs(keras.callbacks.Callback):
        ran = []

        def on_epoch_end(self, epoch, logs=None):
            self.ran.append(epoch)

    summary = train.run(train.parse_args(argv), callbacks=[Epochs()])
    assert Epochs.ran == [1]  # resumed at epoch 2: epoch 1 was not repeated
    assert len(summary["history"]["loss"]) == 2  # the summary still covers both epochs
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "summary.json"]  # no backup left
    saved = json.loads((out / "summary.json").read_text())
    assert saved["report"]["num_samples"] == 40
    assert [a["name"] for a in saved["report"]["attacks"]] == ["pgd exit_1", "pgd main"]
    restored = keras.models.load_model(out / "model.keras")
    assert restored.exit_policy.thresholds.tolist() == saved["thresholds"]
    assert "worst case" in capsys.readouterr().out

    assert evaluate.main(["--model", str(out / "model.keras"), "--dataset", "digits", "--samples", "24",
                          "--attacks", "pgd,fgsm", "--attack-steps", "2", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    names = [a["name"] for a in report["attacks"]]
    assert "fgsm max_average" in names and "pgd routing" in names and "fgsm exit_hijack" in names
    assert len(names) == 14  # 2 methods x (3 exits, average, max-average, routing, exit hijack)


@pytest.mark.slow
def test_python_m_train_runs_the_command_line(tmp_path, digits):
    """``python -m rdinet_tf.train`` trains, calibrates on the validation split, evaluates and saves; a bad
    argument is one error line and writes nothing."""
    out = tmp_path / "run"
    completed = subprocess.run([sys.executable, "-m", "rdinet_tf.train", "--dataset", "digits", "--epochs", "1",
                                "--steps-per-epoch", "3", "--batch-size", "16", "--eval-attacks", "fgsm",
                                "--eval-samples", "16", "--quiet", "--out", str(out)],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert "loss" in summary["history"] and {len(v) for v in summary["history"].values()} == {1}  # one epoch
    model = models.load(out / "model.keras")
    expected = ExitPolicy.calibrate(model, digits.x_val)  # equal share on the validation split
    np.testing.assert_allclose(model.exit_policy.thresholds, expected.thresholds, rtol=1e-6)
    assert "worst case" in completed.stdout and "fgsm max_average" in completed.stdout
    bad = subprocess.run([sys.executable, "-m", "rdinet_tf.train", "--dataset", "digits", "--epochs", "0",
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-3000:]
    assert bad.stderr.strip().splitlines()[-1].startswith("error: argument --epochs: must be >= 1")
    assert not (tmp_path / "bad").exists()


def test_cli_errors_are_one_line(tmp_path, cli_error):
    assert "takes (32, 32, 3) images" in cli_error(
        train.main, ["--model", "resnet38", "--dataset", "digits", "--out", str(tmp_path)])
    assert "no .keras model file" in cli_error(
        evaluate.main, ["--model", str(tmp_path / "missing.keras"), "--dataset", "digits"])
    assert re.search("no data files|not found|does not exist", cli_error(
        train.main, ["--dataset", "mnist", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)]))
    assert not any(tmp_path.iterdir())


def test_zero_is_a_value_not_the_recipes(train_compile_arguments):
    """--eps 0 and --step-size 0 are used as given, never replaced by the paper recipe's values."""
    compiled = train_compile_arguments(["--dataset", "digits", "--eps", "0", "--step-size", "0", "--attack-steps", "3"])
    assert compiled["attack"] == attacks.PGD(0.0, 0.0, 3)


def test_a_run_of_an_hour_or_more_says_how_long_it_will_take(capsys, monkeypatch):
    from rdinet_tf.experiments import pipeline

    clock = iter([0.0, 10.0, 12.0, 14.0])  # step 1 traces; steps 2-4 take 2 s each
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: next(clock))
    warning = pipeline._DurationWarning(total_steps=3600)
    for batch in range(6):
        warning.on_train_batch_end(batch)
    assert "about 2.0 hours (3600 steps)" in capsys.readouterr().out
    quick = pipeline._DurationWarning(total_steps=100)
    clock = iter([0.0, 10.0, 12.0, 14.0])
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: next(clock))
    for batch in range(4):
        quick.on_train_batch_end(batch)
    assert capsys.readouterr().out == ""
