"""Batched early exit in TensorFlow and the SavedModel that serves it: the exits and predictions of
``ExitPolicy.predict`` (every exit computed), with stage k run only on the images still present."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from rdinet_tf import models
from rdinet_tf.architecture import flops
from rdinet_tf.cli import export as export_cli
from rdinet_lite.errors import InputError
from rdinet_tf.export import compare_saved_model, export_saved_model
from rdinet_tf.exits.policy import ExitPolicy, exit_entropies, predict_exit_logits


def thresholds_between(entropies, share=0.35):
    """Thresholds letting about ``share`` of the images still present out at each side exit, each halfway
    across the widest gap between neighbouring entropies near that share, so that float rounding (the
    folded stages, another batch) cannot move an image across; an exit with no such gap is closed (0)."""
    present, thresholds = np.ones(len(entropies), bool), []
    for k in range(entropies.shape[1] - 1):
        values = np.sort(entropies[present, k])
        target, reach = int(share * len(values)), max(len(values) // 6, 1)
        window = range(max(target - reach, 0), min(target + reach, len(values) - 1))
        best = max(window, key=lambda i: values[i + 1] - values[i], default=None)
        threshold = 0.0
        if best is not None and values[best + 1] - values[best] > 1e-4:
            threshold = max((values[best] + values[best + 1]) / 2, 0.0)
        thresholds.append(threshold)
        present &= ~(entropies[:, k] < threshold) | (threshold == 0)
    return np.array(thresholds)


def _images(shape, count, seed):
    """Random images from dark to bright (a spread of exit entropies even in a random-weight network)."""
    rng = np.random.default_rng(seed)
    return (rng.random((count, *shape), dtype=np.float32) * rng.random((count, 1, 1, 1), dtype=np.float32))


@pytest.fixture(scope="module", params=["smallcnn", "resnet38", "mobilenetv2"])
def case(request):
    """(model, images, policy with thresholds clear of every image's entropies) per architecture."""
    model = models.build(request.param)
    images = _images(models.MODELS[request.param].input_shape, 40, seed=0)
    entropies = np.asarray(exit_entropies(predict_exit_logits(model, images)))
    return model, images, ExitPolicy(thresholds_between(entropies))


def test_adaptive_prediction_takes_the_exits_of_predict(case):
    model, images, policy = case
    expected = policy.predict(model, images)
    assert len(set(expected.exits.tolist())) >= 2  # exits are actually taken
    got = policy.predict_adaptive(model, images, batch_size=16)  # 16, 16 and a last batch of 8
    np.testing.assert_array_equal(got.exits, expected.exits)
    np.testing.assert_array_equal(got.predictions, expected.predictions)
    np.testing.assert_allclose(got.costs, flops.exit_costs(model, thresholds=policy.thresholds)[expected.exits])
    assert got.convention == "honest" and got.num_exits == model.num_exits
    one_by_one = policy.predict_adaptive(model, images, batch_size=1)  # batches of one
    np.testing.assert_array_equal(one_by_one.exits, expected.exits)
    np.testing.assert_array_equal(one_by_one.predictions, expected.predictions)


def _record_batches(model, seen):
    """``model.inference_segments`` replaced by stages that record the batch each one runs on."""
    stages, heads = model.inference_segments()

    def recording(k, stage):
        def run(features, training=False):
            record = tf.numpy_function(lambda n: seen.append((k, int(n))) or np.int32(0), [tf.shape(features)[0]],
                                       tf.int32)
            with tf.control_dependencies([record]):
                return stage(tf.identity(features), training=training)
        return run

    object.__setattr__(model, "inference_segments", lambda: ([recording(k, s) for k, s in enumerate(stages)], heads))


def test_each_stage_runs_only_on_the_images_still_present():
    model = models.build("smallcnn")  # its own: the recording stages stay with it
    images = _images((28, 28, 1), 24, seed=1)
    entropies = np.asarray(exit_entropies(predict_exit_logits(model, images)))
    policy = ExitPolicy(thresholds_between(entropies, share=0.5))
    exits = policy.predict(model, images).exits
    seen = []
    _record_batches(model, seen)
    policy.predict_adaptive(model, images, batch_size=24)
    assert seen == [(k, int((exits >= k).sum())) for k in range(3)] and 0 < (exits >= 1).sum() < 24
    seen.clear()
    everyone_leaves = ExitPolicy([10.0, 10.0])  # entropies are at most log(10) < 10
    assert everyone_leaves.predict_adaptive(model, images, batch_size=24).exits.tolist() == [0] * 24
    assert seen == [(0, 24)]  # the later stages are skipped
    seen.clear()
    policy.predict_adaptive(model, images[:4], batch_size=1)
    assert seen == [(k, 1) for image in exits[:4] for k in range(image + 1)]  # one image: only its stages


def test_a_closed_exit_is_never_taken_and_its_head_not_counted(case):
    model, images, policy = case
    thresholds = policy.thresholds.copy()
    thresholds[0] = 0.0
    closed = ExitPolicy(thresholds)
    got = closed.predict_adaptive(model, images)
    assert 0 not in got.exits.tolist()
    np.testing.assert_array_equal(got.exits, closed.predict(model, images).exits)
    np.testing.assert_allclose(got.costs, closed.predict(model, images).costs)


@pytest.mark.parametrize("images, message", [
    (np.zeros((4, 28, 28), np.float32), "shape"),
    (np.zeros((4, 32, 32, 3), np.float32), "shape"),
    (np.zeros((4, 28, 28, 1), np.uint8), "float32"),
    (np.full((4, 28, 28, 1), np.nan, np.float32), "NaN"),
    (np.full((4, 28, 28, 1), 255, np.float32), r"\[0, 1\]"),
])
def test_bad_images_are_refused_as_by_predict(smallcnn, images, message):
    policy = ExitPolicy([0.5, 1.0])
    with pytest.raises(InputError, match=message):
        policy.predict(smallcnn, images)
    with pytest.raises(InputError, match=message):
        policy.predict_adaptive(smallcnn, images)


def test_empty_batch_bad_batch_size_and_wrong_policy(smallcnn, mnist_like):
    for empty in (ExitPolicy([0.5, 1.0]).predict_adaptive(smallcnn, mnist_like[:0]),
                  ExitPolicy([0.5, 1.0]).predict(smallcnn, mnist_like[:0])):
        assert empty.exits.shape == empty.predictions.shape == empty.costs.shape == (0,)
    with pytest.raises(InputError, match="got none"):
        ExitPolicy.calibrate(smallcnn, mnist_like[:0])
    for batch_size in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="batch_size must be a positive integer"):
            ExitPolicy([0.5, 1.0]).predict_adaptive(smallcnn, mnist_like, batch_size=batch_size)
    with pytest.raises(InputError, match="2 thresholds"):
        ExitPolicy([0.5]).predict_adaptive(smallcnn, mnist_like)


# The SavedModel, loaded where rdinet_tf cannot be imported.
_SERVE = textwrap.dedent("""
    import importlib.abc, json, sys
    class NoRdinet(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "rdinet_tf":
                raise ImportError("rdinet_tf is not installed here")
    sys.meta_path.insert(0, NoRdinet())
    sys.path = [p for p in sys.path if p not in ("", ".") and not p.startswith({repo!r})]
    try:
        import rdinet_tf
        sys.exit("rdinet_tf was importable")
    except ImportError:
        pass
    import numpy as np
    import tensorflow as tf
    served = tf.saved_model.load(sys.argv[1])
    serve = served.signatures["serving_default"]
    images = np.load(sys.argv[2])
    outputs = {{k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}}
    empty = serve(images=tf.zeros((0, *images.shape[1:])))
    served.signatures["full"](images=tf.zeros((0, *images.shape[1:])))
    try:
        serve(images=tf.constant(images * 255))
        refused = ""
    except tf.errors.InvalidArgumentError as error:
        refused = error.message
    np.savez(sys.argv[3], **outputs, empty_exits=empty["exit"].numpy())
    print(json.dumps({{"signatures": sorted(served.signatures), "refused": refused,
                      "inputs": {{k: [v.dtype.name, v.shape.as_list()] for k, v in
                                 serve.structured_input_signature[1].items()}}}}))
""")


@pytest.fixture(scope="module")
def served_smallcnn(tmp_path_factory):
    model = models.build("smallcnn")
    images = _images((28, 28, 1), 40, seed=2)
    entropies = np.asarray(exit_entropies(predict_exit_logits(model, images)))
    model.exit_policy = ExitPolicy(thresholds_between(entropies))
    out = tmp_path_factory.mktemp("served") / "rdinet" / "1"
    assert export_saved_model(model, out, include_full=True) == ["serving_default", "full"]
    return model, images, out


def test_saved_model_serves_the_early_exit_without_rdinet_tf(served_smallcnn, tmp_path):
    model, images, out = served_smallcnn
    repo = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "serve.py"
    script.write_text(_SERVE.format(repo=repo))
    done = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "images.npy"),
                           str(tmp_path / "outputs.npz")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["signatures"] == ["full", "serving_default"]
    assert report["inputs"] == {"images": ["float32", [None, 28, 28, 1]]}
    assert "pixels in [0, 1]" in report["refused"]
    outputs = np.load(tmp_path / "outputs.npz")
    expected = model.exit_policy.predict(model, images)
    assert len(set(expected.exits.tolist())) >= 2
    np.testing.assert_array_equal(outputs["exit"], expected.exits + 1)
    np.testing.assert_array_equal(outputs["class"], expected.predictions)
    np.testing.assert_allclose(outputs["cost_mflops"], expected.costs, rtol=1e-6)
    logits = np.stack(predict_exit_logits(model, images), axis=1)[np.arange(len(images)), expected.exits]
    np.testing.assert_allclose(outputs["probabilities"], tf.nn.softmax(logits).numpy(), atol=1e-5)
    assert outputs["empty_exits"].shape == (0,)


def test_saved_model_full_signature_and_comparison(served_smallcnn):
    model, images, out = served_smallcnn
    full = tf.saved_model.load(str(out)).signatures["full"](images=tf.constant(images))
    final = predict_exit_logits(model, images)[-1]
    np.testing.assert_array_equal(full["class"].numpy(), final.argmax(-1))
    report = compare_saved_model(model, out, images)
    assert report["same_exit_and_prediction"] == 1.0 and report["samples"] == 40


def test_saved_model_export_refuses_a_model_without_thresholds_and_an_existing_folder(served_smallcnn, tmp_path):
    model, _, out = served_smallcnn
    with pytest.raises(InputError, match="already exists"):
        export_saved_model(model, out)
    bare = models.build("smallcnn")
    with pytest.raises(InputError, match="no exit thresholds"):
        export_saved_model(bare, tmp_path / "bare")
    assert not (tmp_path / "bare").exists()


def test_command_line_saved_model(served_smallcnn, tmp_path, capsys, cli_error):
    model, _, _ = served_smallcnn
    path = tmp_path / "model.keras"
    model.save(path)
    assert export_cli.main(["--saved-model", str(tmp_path / "serving"), "--model", str(path), "--version", "3"]) == 0
    assert "tensorflow_model_server --model_base_path=" in capsys.readouterr().out
    assert sorted(tf.saved_model.load(str(tmp_path / "serving" / "3")).signatures) == ["serving_default"]
    argv = ["--model", str(path)]
    assert "choose what to export" in cli_error(export_cli.main, argv)
    assert "already exists" in cli_error(export_cli.main, [*argv, "--saved-model", str(tmp_path / "serving"),
                                                           "--version", "3"])
    assert "--quantization set the TFLite bundle" in cli_error(
        export_cli.main, [*argv, "--saved-model", str(tmp_path / "s2"), "--quantization", "int8"])
    assert "--in-graph-exit set the TFLite bundle; add --out DIR" in cli_error(
        export_cli.main, [*argv, "--saved-model", str(tmp_path / "s2"), "--in-graph-exit"])
    assert "--tflite needs --out" in cli_error(export_cli.main, [*argv, "--tflite"])
    assert not (tmp_path / "s2").exists()


def test_an_image_leaves_only_below_the_threshold_not_at_it():
    """Exit 1 answers the same logits for every image (its head's last kernel zeroed): at a threshold equal to
    their entropy nobody leaves there, just above it everybody does, as in ``predict``."""
    model = models.build("smallcnn")
    last_dense = [layer for layer in model.heads[0].layers if getattr(layer, "units", None) == 10][-1]
    bias = np.linspace(3, -1, 10).astype(np.float32)
    last_dense.kernel.assign(np.zeros(last_dense.kernel.shape, np.float32))
    last_dense.bias.assign(bias)
    images = _images((28, 28, 1), 8, seed=3)
    level = float(np.asarray(exit_entropies(predict_exit_logits(model, images)))[0, 0])
    for threshold, expected_first in ((level, False), (float(np.nextafter(np.float32(level), np.float32(9))), True)):
        policy = ExitPolicy([threshold, 0.0])
        assert (policy.predict(model, images).exits == 0).all() == expected_first
        assert (policy.predict_adaptive(model, images).exits == 0).all() == expected_first
        assert (policy.predict_adaptive(model, images).exits == 0).any() == expected_first
