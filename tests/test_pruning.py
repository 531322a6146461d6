"""Pruned single-exit baseline: TF-MOT pruning, sparse cost, the prune CLI, Keras 3 isolation."""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from rdinet_tf import models
from rdinet_tf import evaluation
from rdinet_lite import files
from rdinet_tf.architecture import flops
from rdinet_tf.baselines import pruning
from rdinet_tf import attacks
from rdinet_tf.architecture import chain
from rdinet_tf.cli import prune
from rdinet_lite.errors import InputError
from rdinet_tf.models import MultiExitModel

SPARSITY = 0.5


@pytest.fixture(scope="module")
def source():
    """A SmallCNN with random non-zero kernels everywhere (fc3 is zero-initialised)."""
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    fc3 = model.heads[-1].get_layer("fc3")
    fc3.kernel.assign(np.random.default_rng(0).normal(0, 0.05, fc3.kernel.shape))
    return model


@pytest.fixture(scope="module")
def source_path(source, tmp_path_factory):
    """The source model saved once, as the prune command line reads it."""
    path = tmp_path_factory.mktemp("source") / "source.keras"
    source.save(path)
    return path


@pytest.fixture(scope="module")
def environment_before():
    return os.environ.get("TF_USE_LEGACY_KERAS")


@pytest.fixture(scope="module")
def result(source, digits, environment_before):
    return pruning.prune_final_exit(source, digits.x_train, digits.y_train, SPARSITY,
                                    attacks.PGD(0.3, 0.1, 1), epochs=2, steps_per_epoch=3, batch_size=16)


def tiny_model():
    """Two exits: conv(4) -> head dense, then conv(8) -> head dense."""
    def head(x):
        return layers.Dense(3, name=f"head_{x.shape[-1]}")(layers.Flatten()(x))

    return chain([(lambda x: layers.Conv2D(4, 3, name="conv_a")(x), head),
                  (lambda x: layers.Conv2D(8, 3, name="conv_b")(x), head)], (6, 6, 1), "tiny")


def test_sparsity_is_reached_after_fine_tune(result):
    assert abs(result.sparsity - SPARSITY) < 0.01
    assert set(result.layer_sparsity) == set(pruning.prunable_layers(result.model))
    for name, sparsity in result.layer_sparsity.items():
        assert abs(sparsity - SPARSITY) < 0.01, name
    assert result.steps == 6 and len(result.loss) == 2 and np.isfinite(result.loss).all()


def test_pruned_model_is_a_keras3_multi_exit_model(result, source, digits, tmp_path):
    model = result.model
    assert isinstance(model, MultiExitModel) and isinstance(model, keras.Model)
    assert model is not source and model.exit_policy.thresholds.tolist() == [0.0, 0.0]
    assert pruning.prunable_layers(model) == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "fc3"]
    # side heads are copied; the source is unchanged
    np.testing.assert_array_equal(model.heads[0].get_weights()[0], source.heads[0].get_weights()[0])
    assert pruning.measured_sparsity(source)[0] == 0
    files.publish(tmp_path, {"pruned.keras": model.save})
    loaded = models.load(tmp_path / "pruned.keras")
    assert isinstance(loaded, MultiExitModel)
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])
    report = evaluation.robustness_report(loaded, digits.x_test[:16], digits.y_test[:16],
                                        [attacks.PGD(0.3, 0.1, 1)], objectives=["main"], progress=False,
                                        slowdown=False)
    assert report.clean.exit_shares == [0.0, 0.0, 1.0]


def test_fine_tune_settings_are_checked_before_any_pruning(source, digits):
    def prune(**fine_tune):
        pruning.prune_final_exit(source, digits.x_train[:8], digits.y_train[:8], SPARSITY, attacks.fgsm(0.3),
                                 **fine_tune)

    with pytest.raises(InputError, match="does not take learning_rte; the fine-tune settings are epochs, "):
        prune(learning_rte=0.1)
    with pytest.raises(InputError, match="epochs >= 1"):
        prune(epochs=0)
    assert pruning.FineTune(batch_size=3).steps(10) == 4 and pruning.FineTune(steps_per_epoch=2).steps(10) == 2


def test_sparse_cost_halves_a_half_sparse_conv():
    model = tiny_model()
    conv = model.stages[0].get_layer("conv_a")
    kernel = np.ones(conv.kernel.shape, np.float32)
    kernel.reshape(-1)[::2] = 0  # 18 of 36 weights
    conv.kernel.assign(kernel)
    dense, sparse = flops.segment_macs_of(model.stages[0]), flops.segment_macs_of(model.stages[0], sparse=True)
    assert dense.conv == 36 * 16 and sparse.conv == dense.conv // 2
    assert flops.layer_macs(conv) == dense.conv and flops.layer_macs(conv, sparse=True) == sparse.conv
    costs, sparse_costs = flops.exit_costs(model), flops.exit_costs(model, sparse=True)
    np.testing.assert_allclose(costs - sparse_costs, 18 * 16 / 1e6)
    assert flops.cost_table(model, sparse=True).endswith("(sparse: non-zero weights only)")
    assert "sparse" not in flops.cost_table(model)


def test_pruned_cost_matches_the_target(result, source):
    for convention in ("honest", "paper"):
        dense = pruning.final_exit_cost(source, convention)
        sparse = pruning.final_exit_cost(result.model, convention, sparse=True)
        assert sparse == pytest.approx((1 - SPARSITY) * dense, rel=0.01)
        assert pruning.final_exit_cost(result.model, convention) == dense


def test_target_mflops_solves_for_sparsity(smallcnn):
    honest = pruning.final_exit_cost(smallcnn)
    assert honest == pytest.approx(9.9524)  # final-exit path only: less than exit_3's cost
    assert honest < flops.exit_costs(smallcnn)[-1]
    assert pruning.sparsity_for_cost(smallcnn, 0.25 * honest) == pytest.approx(0.75)
    paper = pruning.final_exit_cost(smallcnn, "paper")
    assert paper == pytest.approx(flops.exit_costs(smallcnn, "paper")[-1])
    assert pruning.sparsity_for_cost(smallcnn, 0.6 * paper, "paper") == pytest.approx(0.4)
    with pytest.raises(InputError, match="below what pruning can reach"):
        pruning.sparsity_for_cost(smallcnn, 0.001)
    with pytest.raises(InputError, match="above the unpruned final-exit cost"):
        pruning.sparsity_for_cost(smallcnn, honest + 1)


def test_pruning_leaves_the_process_on_keras3(result, environment_before):
    assert os.environ.get("TF_USE_LEGACY_KERAS") == environment_before
    assert tf.keras.version().startswith("3.")
    model = models.build("smallcnn")
    assert isinstance(model, keras.Model) and type(model).__module__.startswith("rdinet_tf")
    assert all(type(layer).__module__.startswith("keras.") for layer in model.stages[0].layers)


@pytest.mark.slow
def test_cli_in_a_fresh_process_writes_outputs_and_stays_on_keras3(source_path, source, tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        import rdinet_tf.baselines.pruning, rdinet_tf.cli.prune
        assert "tensorflow_model_optimization" not in sys.modules  # imported lazily
        code = rdinet_tf.cli.prune.main(["--model", {str(source_path)!r}, "--dataset", "digits",
            "--out", {str(tmp_path / "out")!r}, "--target-mflops", "4", "--epochs", "1",
            "--steps-per-epoch", "2", "--batch-size", "16", "--fast", "--eval-attack-steps", "1",
            "--eval-samples", "16", "--quiet"])
        assert code == 0
        assert "tensorflow_model_optimization" in sys.modules
        assert "TF_USE_LEGACY_KERAS" not in os.environ
        import keras, tensorflow as tf
        from rdinet_tf import models
        assert tf.keras.version().startswith("3.") and keras.__version__.startswith("3.")
        model = models.build("smallcnn")
        model.compile(defense="none")
        model.fit(tf.zeros((4, 28, 28, 1)), tf.zeros((4,), tf.int32), verbose=0)
        print("KERAS3 OK")
    """)
    environment = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               env=environment, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "KERAS3 OK" in completed.stdout and "sparse: non-zero weights only" in completed.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["pruned"]["mflops"] == pytest.approx(4.0, rel=0.01)
    assert summary["source"]["mflops"] == pytest.approx(pruning.final_exit_cost(source))
    assert isinstance(models.load(tmp_path / "out" / "model.keras"), MultiExitModel)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.keras", "summary.json"]


def test_cli_failure_leaves_nothing(result, source_path, tmp_path, monkeypatch, cli_error):
    monkeypatch.setattr(pruning, "prune_final_exit", lambda *args, **kwargs: result)
    monkeypatch.setattr(pruning, "evaluate_final_exit", lambda *args, **kwargs: {})
    saved = []

    def fail(path):
        saved.extend(os.listdir(tmp_path / "out"))  # the model is written first, then removed again
        raise OSError("disk full")

    monkeypatch.setattr(files, "json_writer", lambda data: fail)
    assert "disk full" in cli_error(prune.main, ["--model", str(source_path), "--dataset", "digits",
                                                 "--out", str(tmp_path / "out"), "--target-sparsity", "0.5"])
    assert len(saved) == 2 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments, message", [
    (["--target-sparsity", "1"], "sparsity must be in \\[0, 1\\)"),
    (["--target-sparsity", "-0.1"], "sparsity must be in \\[0, 1\\)"),
    (["--target-mflops", "0.001"], "below what pruning can reach"),
    (["--target-mflops", "50"], "above the unpruned final-exit cost"),
    (["--target-mflops", "0"], "argument --target-mflops: must be > 0"),
    (["--target-sparsity", "0.5", "--epochs", "0"], "argument --epochs: must be >= 1"),
    (["--target-sparsity", "0.5", "--dataset", "cifar10"], "pick a matching --dataset"),
    (["--target-sparsity", "0.5", "--model", "missing.keras"], "no .keras model file"),
    (["--target-sparsity", "0.5", "--dataset", "mnist", "--data-dir", "no/such/dir"], "no/such/dir"),
])
def test_cli_errors_are_clear(source_path, tmp_path, cli_error, arguments, message):
    argv = ["--model", str(source_path), "--dataset", "digits", "--out", str(tmp_path / "out"), *arguments]
    assert re.search(message, cli_error(prune.main, argv))
    assert not (tmp_path / "out").exists()


def test_cli_rejects_a_file_as_out(source_path, tmp_path, cli_error):
    (tmp_path / "out").write_text("")
    assert "is a file" in cli_error(prune.main, ["--model", str(source_path), "--out", str(tmp_path / "out"),
                                                 "--target-sparsity", "0.5"])


def test_pruned_final_exit_is_smaller_as_tflite(result, source):
    """The pruned model's final-exit TFLite file (sparse encoding) downloads smaller than the source's."""
    from rdinet_tf import export

    dense = export.convert(export.full_model(source))
    pruned = export.convert(export.full_model(result.model), sparse_encoding=True)
    assert export.gzip_size(pruned) < 0.8 * export.gzip_size(dense)
    assert export.gzip_size(dense) < len(dense)
