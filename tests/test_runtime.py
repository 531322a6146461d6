"""EarlyExitRunner: early exit on one image and on a batch, and a clear error for each bad input."""

import hashlib
import json
import shutil

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from rdinet_tf import models
from rdinet_lite import latency
from rdinet_lite.errors import InputError
from rdinet_tf.export import export_tflite, tflite
from rdinet_lite.inputs import entropy_bounds
from rdinet_tf.exits.policy import ExitPolicy
from rdinet_lite import runner as runner_module
from rdinet_lite.manifest import Manifest, to_json
from rdinet_lite.runner import EarlyExitRunner

import oracle


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((48, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def model(images):
    """A fresh SmallCNN with thresholds halfway between neighbouring exit entropies of ``images`` (no ties),
    roughly a third of the images leaving at each exit."""
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    entropies = oracle.entropies(model.predict(images, verbose=0))
    thresholds = []
    for k, share in ((0, 1 / 3), (1, 1 / 2)):
        ordered = np.sort(entropies[:, k] if k == 0 else entropies[entropies[:, 0] >= thresholds[0], 1])
        # the widest gap between neighbours around the share (an untrained network's entropies crowd log 10)
        candidates = range(int((share - 0.1) * len(ordered)), int((share + 0.1) * len(ordered)) + 1)
        i = max(candidates, key=lambda j: ordered[j] - ordered[j - 1])
        thresholds.append(float((ordered[i - 1] + ordered[i]) / 2))
    model.exit_policy = ExitPolicy(thresholds)
    return model


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, model):
    out = tmp_path_factory.mktemp("runtime") / "bundle"
    export_tflite(model, out)
    return out


@pytest.fixture
def copy(tmp_path, bundle):
    """A writable copy of the bundle, to damage."""
    return shutil.copytree(bundle, tmp_path / "bundle")


def _edit_manifest(bundle_dir, edit):
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_run_and_run_batch_give_the_keras_early_exit(bundle, model, images):
    """Every image, one at a time and as a batch: the exit, prediction and probabilities of Keras's logits under
    the rule, computed in numpy (no entropy is within 1e-6 of a threshold, so the exits agree exactly)."""
    exits, predictions, probabilities, entropies = oracle.keras_early_exit(model, images)
    assert np.abs(entropies[:, :-1] - model.exit_policy.thresholds).min() > 1e-6
    assert np.bincount(exits, minlength=3).min() >= 8
    runner = EarlyExitRunner(bundle, num_threads=1)
    singles = [runner.run(image) for image in images]
    np.testing.assert_array_equal([r.exit for r in singles], exits)
    np.testing.assert_array_equal([r.prediction for r in singles], predictions)
    np.testing.assert_allclose(np.stack([r.probabilities for r in singles]), probabilities, atol=1e-6)
    batch = runner.run_batch(images)
    assert batch.exits.shape == batch.predictions.shape == batch.seconds.shape == (48,)
    assert batch.probabilities.shape == (48, 10) and (batch.seconds > 0).all()
    np.testing.assert_array_equal(batch.exits, exits)
    np.testing.assert_array_equal(batch.predictions, predictions)
    np.testing.assert_allclose(batch.probabilities, probabilities, atol=1e-6)
    np.testing.assert_array_equal(batch.exit_shares, np.bincount(exits, minlength=3) / 48)
    assert runner.run(images[:1]).exit == exits[0]  # (1, H, W, C) as well as (H, W, C)


def _per_image_chain(bundle_dir, images):
    """Exits and probabilities of the segment chain one image at a time, through LiteRT's public
    ``SignatureRunner`` calls and the manifest's thresholds: an oracle independent of the runner."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    interpreter = Interpreter(model_path=str(bundle_dir / "model.tflite"), num_threads=1)
    segments = [interpreter.get_signature_runner(s["signature"]) for s in manifest["segments"]]
    exits, probabilities = [], []
    for image in images:
        inputs = {"image": image[None]}
        for index, segment in enumerate(segments):
            outputs = segment(**inputs)
            threshold = manifest["thresholds"][index] if index < len(segments) - 1 else None
            if threshold is None or (threshold > 0 and outputs["entropy"][0] < np.float32(threshold)):
                break
            inputs = {"features": outputs["next_features"]}
        exits.append(index)
        probabilities.append(outputs["probs"][0])
    return np.array(exits), np.stack(probabilities)


def test_run_batch_runs_each_segment_on_the_remaining_images(bundle, images, monkeypatch):
    runner = EarlyExitRunner(bundle, num_threads=1)
    exits, probabilities = _per_image_chain(bundle, images)
    assert len(set(exits.tolist())) == 3
    batches = []
    for index, segment in enumerate(runner.segments):
        def recording(input_name, value, rows=None, segment=segment, index=index):
            batches.append((index, len(value) if rows is None else int(rows.sum())))
            return type(segment).invoke(segment, input_name, value, rows)
        monkeypatch.setattr(segment, "invoke", recording)
    result = runner.run_batch(images, batch_size=20)  # 20, 20 and 8
    np.testing.assert_array_equal(result.exits, exits)
    np.testing.assert_allclose(result.probabilities, probabilities, atol=1e-6)
    np.testing.assert_array_equal(result.predictions, probabilities.argmax(-1))
    expected = [(k, int((exits[start:start + 20] >= k).sum())) for start in (0, 20, 40) for k in range(3)]
    assert batches == [b for b in expected if b[1] > 0]
    assert result.seconds.shape == (48,) and (result.seconds > 0).all()
    monkeypatch.undo()
    assert [runner.run(image).exit for image in images] == exits.tolist()  # back to one image after a batch
    np.testing.assert_array_equal(runner.run_batch(images, batch_size=1).exits, exits)


def test_run_batch_with_every_image_leaving_early_or_none(bundle, images):
    runner = EarlyExitRunner(bundle, num_threads=1)
    empty = runner.run_batch(images[:0])
    assert empty.exits.shape == empty.predictions.shape == empty.seconds.shape == (0,)
    assert empty.probabilities.shape == (0, 10)
    for thresholds, exit_taken in (([10.0, 10.0], 0), ([0.0, 0.0], 2)):
        runner._entropy_bounds = entropy_bounds(thresholds).astype(np.float32)
        assert runner.run_batch(images).exits.tolist() == [exit_taken] * 48


def test_run_batch_refuses_a_bad_batch_size_and_batches_of_a_fixed_batch_bundle(bundle, images, monkeypatch):
    runner = EarlyExitRunner(bundle)
    for batch_size in (0, 2.0, True):
        with pytest.raises(InputError, match="batch_size must be a positive integer"):
            runner.run_batch(images, batch_size=batch_size)
    monkeypatch.setattr(runner.segments[1], "takes_batches", False)  # as a bundle exported before batches
    assert not runner.takes_batches
    np.testing.assert_array_equal(runner.run_batch(images[:4]).exits, runner.run_batch(images[:4], 1).exits)
    with pytest.raises(InputError, match="fixed batch of 1.*re-export"):
        runner.run_batch(images, batch_size=8)


def test_without_litert_internals_the_public_signature_runner_gives_the_same_results(bundle, images, monkeypatch):
    """A LiteRT whose SignatureRunner lacks the private wrapper the in-place path uses gets LiteRT's public
    SignatureRunner call instead: same exits, predictions and probabilities, one image or batches."""
    in_place = EarlyExitRunner(bundle, num_threads=1)
    assert all(segment.in_place for segment in in_place.segments)
    signature_runner = in_place.interpreter.get_signature_runner("segment_1")
    image = in_place.segments[0].inputs["image"]  # its tensor index
    assert runner_module._in_place_access(signature_runner, {image: (1, 28, 28, 1)})
    assert runner_module._in_place_access(signature_runner, {image: (1, 32)}) is None  # views of another shape
    assert runner_module._in_place_access(object(), {}) is None  # no _interpreter_wrapper / _subgraph_index
    expected = in_place.run_batch(images)
    assert len(set(expected.exits.tolist())) == 3

    monkeypatch.setattr(runner_module, "_in_place_access", lambda runner, input_shapes: None)
    public = EarlyExitRunner(bundle, num_threads=1)
    assert not any(segment.in_place for segment in public.segments)
    for batch_size in (20, 1):
        result = public.run_batch(images, batch_size=batch_size)
        np.testing.assert_array_equal(result.exits, expected.exits)
        np.testing.assert_array_equal(result.predictions, expected.predictions)
        np.testing.assert_allclose(result.probabilities, expected.probabilities, atol=1e-6)
    assert [public.run(image).exit for image in images[:8]] == expected.exits[:8].tolist()
    assert len(latency.benchmark_bundle(public, images[:4], warmup=1)["segment_us"]) == 3


def test_a_manifest_is_read_through_its_schema(bundle):
    """The runner's manifest is the Manifest read from the bundle; it writes back the JSON it was read from."""
    manifest = EarlyExitRunner(bundle).manifest
    assert isinstance(manifest, Manifest) and manifest == Manifest.read(bundle)
    assert manifest.to_json() == json.loads((bundle / "manifest.json").read_text())
    assert [s.signature for s in manifest.segments] == ["segment_1", "segment_2", "segment_3"]
    assert [s.exit for s in manifest.segments] == ["exit_1", "exit_2", "exit_3"]


def test_benchmark_bundle_times_chain_and_segments(bundle, images):
    runner = EarlyExitRunner(bundle, num_threads=1)
    result = latency.benchmark_bundle(runner, images[:12], warmup=2)
    assert result["full_ms"] is None and len(result["segment_us"]) == 3
    assert result["predictions"].tolist() == runner.run_batch(images[:12]).predictions.tolist()
    assert sum(result["exit_shares"]) == pytest.approx(1)
    assert 0 < result["early_exit_ms"]["p50"] <= result["early_exit_ms"]["p95"]
    assert result["predicted_early_exit_ms"] > 0


@pytest.mark.parametrize("image, message", [
    (np.zeros((28, 28), np.float32), "shape"),
    (np.zeros((2, 28, 28, 1), np.float32), "shape"),
    (np.zeros((32, 32, 3), np.float32), "shape"),
    (np.zeros((28, 28, 1), np.uint8), "float32"),
    (np.zeros((28, 28, 1), np.float64), "float32"),
    (np.full((28, 28, 1), np.nan, np.float32), "NaN"),
    (np.full((28, 28, 1), 255, np.float32), r"\[0, 1\]"),
])
def test_bad_images_are_refused(bundle, image, message):
    with pytest.raises(InputError, match=message):
        EarlyExitRunner(bundle).run(image)


@pytest.mark.parametrize("batch, message", [
    (np.zeros((28, 28, 1), np.float32), "shape"),
    (np.zeros((4, 32, 32, 3), np.float32), "shape"),
    (np.zeros((4, 28, 28, 1), np.uint8), "float32"),
    (np.zeros((4, 28, 28, 1), np.float64), "float32"),
    (np.where(np.arange(28)[:, None, None] == 3, np.nan, np.zeros((4, 28, 28, 1), np.float32)), "NaN"),
    (np.full((4, 28, 28, 1), 255, np.float32), r"\[0, 1\]"),
])
def test_bad_batch_is_refused(bundle, batch, message):
    with pytest.raises(InputError, match=message):
        EarlyExitRunner(bundle).run_batch(batch)


def test_run_full_needs_a_full_model(bundle, images):
    with pytest.raises(InputError, match="--full"):
        EarlyExitRunner(bundle).run_full(images[0])


def test_missing_or_invalid_manifest(copy):
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        EarlyExitRunner(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(InputError, match="no manifest.json"):
        EarlyExitRunner(copy)


def test_a_format_1_bundle_is_refused_with_the_export_command(copy):
    _edit_manifest(copy, lambda m: m.update(format_version=1))
    with pytest.raises(InputError, match="format-1 bundle .*python -m rdinet_tf.export --tflite"):
        EarlyExitRunner(copy)


def test_missing_bundle_file(copy):
    (copy / "model.tflite").unlink()
    with pytest.raises(InputError, match="model.tflite .*missing"):
        EarlyExitRunner(copy)


def test_truncated_bundle_file(copy):
    path = copy / "model.tflite"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError, match="sha256"):
        EarlyExitRunner(copy)


def test_corrupt_bundle_file_with_a_matching_checksum(copy):
    (copy / "model.tflite").write_bytes(b"not a flatbuffer" * 64)
    _edit_manifest(copy, lambda m: m.update(sha256=hashlib.sha256(b"not a flatbuffer" * 64).hexdigest()))
    with pytest.raises(InputError, match="not a valid TFLite model"):
        EarlyExitRunner(copy)


def test_the_checksum_is_mandatory(copy):
    """Deleting the manifest's sha256 does not let another file through."""
    (copy / "model.tflite").write_bytes(b"another model")
    _edit_manifest(copy, lambda m: m.pop("sha256"))
    with pytest.raises(InputError, match="has no 'sha256' entry"):
        EarlyExitRunner(copy)


def test_manifest_shape_that_does_not_match_the_file(copy):
    def edit(manifest):
        manifest["segments"][1]["inputs"]["features"]["shape"] = [1, 24, 24, 32]
    _edit_manifest(copy, edit)
    with pytest.raises(InputError, match="'segment_2' tensor 'features'.*in the file"):
        EarlyExitRunner(copy)


def test_manifest_tensor_name_that_does_not_match_the_file(copy):
    def edit(manifest):
        manifest["segments"][0]["outputs"]["probs"]["tensor"] = "renamed:0"
    _edit_manifest(copy, edit)
    with pytest.raises(InputError, match="'probs'.*in the file"):
        EarlyExitRunner(copy)


def test_manifest_with_a_segment_missing(copy):
    _edit_manifest(copy, lambda m: m["segments"].pop(1))
    with pytest.raises(InputError, match="'segments' must list 3 segments"):
        EarlyExitRunner(copy)


def test_manifest_naming_a_signature_the_file_lacks(copy):
    _edit_manifest(copy, lambda m: m.update(full_model=dict(m["segments"][0], signature="full",
                                                            cost_mflops={"honest": 1.0, "paper": 1.0})))
    with pytest.raises(InputError, match="has no signature 'full'"):
        EarlyExitRunner(copy)


def test_in_graph_exit_needs_the_export_flag(bundle):
    with pytest.raises(InputError, match="--in-graph-exit"):
        EarlyExitRunner(bundle, in_graph=True)


def test_segments_that_do_not_chain(copy):
    """A file whose segment_2 signature is really segment 3 (consistent with its manifest) is refused."""
    model = models.build("smallcnn")
    endpoints, tracked = tflite.bundle_endpoints(model)
    endpoints["segment_2"] = endpoints["segment_3"]
    flatbuffer = tflite.convert_signatures(endpoints, tracked)
    (copy / "model.tflite").write_bytes(flatbuffer)
    specs = tflite.tensor_specs(flatbuffer)

    def edit(manifest):
        manifest["sha256"] = hashlib.sha256(flatbuffer).hexdigest()
        for segment in manifest["segments"]:
            segment.update(to_json(specs[segment["signature"]]))
    _edit_manifest(copy, edit)
    with pytest.raises(InputError, match="signature segment_2 should read 'features' of shape"):
        EarlyExitRunner(copy)
