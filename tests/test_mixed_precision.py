"""Mixed precision: 16-bit layers, float32 logits, losses and attacks, unmasked input gradients, float32 export."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import data, models, training
from rdinet_tf import attacks
from rdinet_lite.errors import InputError
from rdinet_tf.export import compare_with_keras, export_tflite
from rdinet_tf.training import MultiExitModel

MIXED = ["mixed_bfloat16", "mixed_float16"]


@pytest.fixture(autouse=True)
def float32_afterwards():
    """The precision is global (Keras's dtype policy): every test leaves it at float32."""
    yield
    training.set_precision("float32")


def _copy(model, precision):
    """The SmallCNN ``model`` built again under ``precision``, with its weights and exit policy."""
    training.set_precision(precision)
    copy = models.build("smallcnn")
    copy.set_weights(model.get_weights())
    copy.exit_policy = model.exit_policy
    return copy


def _compute_dtypes(model):
    return {layer.compute_dtype for part in model.stages + model.heads for layer in part.layers}


@pytest.mark.parametrize("precision", MIXED)
def test_a_mixed_model_computes_in_16_bits_and_answers_in_float32(digits_model, digits, precision, tmp_path):
    model = _copy(digits_model, precision)
    images = digits.x_test[:16]
    assert precision.removeprefix("mixed_") in _compute_dtypes(model)
    assert {w.dtype for w in model.weights} == {"float32"}
    expected = model.predict(images, verbose=0)
    outputs = [model(images), model.exit_logits(images), model.exit_logits(images, [1]), expected]
    assert {np.asarray(z).dtype.name for output in outputs for z in output} == {"float32"}
    assert model.output_names == ["exit_1", "exit_2", "exit_3"]
    model.save(tmp_path / "mixed.keras")
    training.set_precision("float32")  # a model keeps its own precision wherever it is loaded
    copy = MultiExitModel.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    for again in (models.load(tmp_path / "mixed.keras"), copy):
        assert again.dtype_policy.name == precision and _compute_dtypes(again) == _compute_dtypes(model)
        for a, b in zip(expected, again.predict(images, verbose=0)):
            np.testing.assert_array_equal(a, b)


def test_set_precision_refuses_an_unknown_precision():
    with pytest.raises(InputError, match="unknown precision 'float16'"):
        training.set_precision("float16")
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("precision", MIXED)
def test_the_input_gradient_is_not_masked(digits_model, digits, precision):
    """Almost no exactly-zero input-gradient entries (the float32 model has ~0.6%: pixels no exit reads
    through a live unit); float16 without loss scaling loses twice as many to underflow."""
    model = _copy(digits_model, precision)
    images, labels = tf.constant(digits.x_test[:128]), tf.constant(digits.y_test[:128])
    _, gradient = attacks.loss_and_gradient(attacks.objective_loss(model, "average"), images, labels)
    gradient = np.asarray(gradient)
    assert gradient.dtype == np.float32 and np.isfinite(gradient).all()
    assert np.mean(gradient == 0) < 0.01


def test_pgd_against_the_bfloat16_copy_is_as_strong_as_against_float32(digits_model, digits):
    images, labels = tf.constant(digits.x_test[:256]), digits.y_test[:256]
    pgd = attacks.PGD(0.05, 0.0125, 5)
    clean = np.mean(np.argmax(digits_model.exit_logits(images, [0])[0], -1) == labels)
    accuracy = {}
    for name, model in [("float32", digits_model), ("bfloat16", _copy(digits_model, "mixed_bfloat16"))]:
        adversarial = attacks.attack_function(model, pgd, "exit_1")(images, tf.constant(labels), tf.constant(0))
        assert adversarial.dtype == tf.float32
        assert 0 <= np.min(adversarial) and np.max(adversarial) <= 1
        assert np.max(np.abs(adversarial - images)) <= 0.05 + 1e-6
        accuracy[name] = np.mean(np.argmax(model.exit_logits(adversarial, [0])[0], -1) == labels)
    assert accuracy["float32"] < clean - 0.2  # the attack works, so masking would show
    assert accuracy["bfloat16"] == pytest.approx(accuracy["float32"], abs=0.02)


def test_a_float16_input_gradient_neither_underflows_nor_overflows_into_the_attack():
    """Per sample, d/dx of x * a * b computed in float16: 1e-8 (0 without loss scaling), 1000 (overflows)."""
    a = tf.constant([1e-4, 1000.0], tf.float16)[:, None, None, None]
    b = tf.constant([1e-4, 1.0], tf.float16)[:, None, None, None]

    def loss_fn(x, _):
        return tf.cast(tf.reduce_sum(tf.cast(x, tf.float16) * a * b, axis=[1, 2, 3]), tf.float32)

    _, gradient = attacks.loss_and_gradient(loss_fn, tf.zeros((2, 2, 2, 1)), None)
    assert gradient.dtype == tf.float32
    assert np.asarray(gradient[0]) == pytest.approx(np.full((2, 2, 1), 1e-8), rel=1e-2)
    np.testing.assert_array_equal(gradient[1], 0.0)


@pytest.mark.parametrize("precision", MIXED)
def test_one_training_step_under_mixed_precision(digits, precision):
    training.set_precision(precision)
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    model.compile(optimizer=keras.optimizers.SGD(0.01), defense="max_average", attack=attacks.fgsm(0.1),
                  slowdown_weight=0.5)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "mixed_float16")
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(data.make_dataset(digits.x_train[:32], digits.y_train[:32], 32), epochs=1, verbose=0)
    assert all(np.isfinite(values).all() for values in history.history.values())
    after = [np.array(w) for w in model.trainable_weights]
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_a_bfloat16_model_exports_the_float32_bundle(digits_model, digits, tmp_path):
    model = _copy(digits_model, "mixed_bfloat16")
    export_tflite(model, tmp_path / "bundle", "float32", representative_images=digits.x_val)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["precision"] == "float32"
    assert {t["dtype"] for s in manifest["segments"] for t in [*s["inputs"].values(), *s["outputs"].values()]} \
        == {"float32"}
    report = compare_with_keras(digits_model, tmp_path / "bundle", digits.x_test)  # the float32 model
    assert report["same_exit_and_prediction"] >= 0.995
    assert report["max_prob_diff"] < 1e-4
    assert _compute_dtypes(model) >= {"bfloat16"}  # the exported model itself is left as it was
