"""Export a multi-exit model as one TFLite file with a signature per segment, for on-device early exit.

Signature ``segment_k`` (1-based) is stage k followed by exit head k. It reads the
feature map left by segment k-1 (segment 1 reads the image) and outputs

* ``next_features``: the feature map for segment k+1 (not in the last segment),
* ``probs``: exit k's softmax probabilities,
* ``entropy``: exit k's entropy -sum p log(p + 1e-5), one value per sample.

A device runs segment 1, stops if its entropy is below T_1, else feeds
``next_features`` to segment 2, and so on (see :mod:`rdinet_lite.runner`).
Optional signatures: ``full`` (image -> final exit probabilities, no side heads)
and ``early_exit`` (the whole early exit inside the graph: nested ``tf.cond``,
i.e. TFLite IF ops, with the thresholds baked in). The segments and ``full``
have a free batch dimension (allocated at 1; the runner resizes them to run a
batch), ``early_exit`` takes one image; all in one ``model.tflite`` (weights stored once, whichever signatures use them)
next to a ``manifest.json`` describing signatures, tensors, thresholds, costs
and quantization.

Command line: ``python -m rdinet_tf.export --tflite ...`` (:mod:`rdinet_tf.cli.export`).
"""

import contextlib
import gzip
import hashlib
import io
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from rdinet_lite import files
from rdinet_tf.architecture import flops
from rdinet_tf.models import check_finite_weights
from rdinet_lite.accounting import CONVENTIONS
from rdinet_tf.architecture import MultiExitNetwork
from rdinet_tf.architecture.folding import folded_segment
from rdinet_tf.architecture.graph import flat_layers
from rdinet_lite.errors import InputError
from rdinet_tf.catalog import QUANTIZATIONS
from rdinet_lite.inputs import open_side_exits
from rdinet_tf.exits.policy import entropy, predict_exit_logits
from rdinet_lite.manifest import (BUNDLE_FILE, FULL_SIGNATURE, IN_GRAPH_SIGNATURE, ExitDistribution, FullModel,
                                  InGraphExit, InputSpec, Manifest, Quantization, Segment, SegmentCost, TensorSpec,
                                  segment_signature)
from rdinet_lite.runner import EarlyExitRunner

SIGNATURE = "serving_default"  # the signature of a single-model TFLite file
PREPROCESSING = "none: float32 pixels in [0,1], NHWC"
ENTROPY_FORMULA = "-sum(p * log(p + 1e-5)) over the softmax probabilities p"
EXIT_RULE = ("leave at exit k (1-based, k < K) when T_k = thresholds[k-1] > 0 and entropy_k < T_k "
             "(a threshold of 0 closes its exit); the last exit always answers")

# What each quantization means for the files (recorded in the manifest, as its "precision" and "precision_notes").
QUANTIZATION_NOTES = {
    "float32": "float32 weights and activations",
    "float16": "float16 weights (dequantized to float32 at load on CPU), float32 activations",
    "dynamic_int8": "int8 weights, float32 activations (dynamic-range quantization)",
    "int8": ("full-integer: int8 weights and activations calibrated on representative "
             "images, except the softmax/entropy tail (float32, from dequantized int8 "
             "logits); float32 inputs/outputs, quantized/dequantized inside each segment"),
}
IN_GRAPH_NOTE = ("the whole early exit in one graph (TFLite IF ops), thresholds fixed at export; "
                 "outputs the probabilities of the exit taken and its 0-based index")
COST_NOTES = {
    "honest": "conv + dense MACs / 1e6; cumulative = segments 1..k (every head evaluated)",
    "paper": ("conv MACs / 2^20; cumulative = backbone convs up to exit k + exit k's own "
              "head (earlier heads not added, as in the paper)"),
}
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "digits": [str(d) for d in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck"],
}


# Layer-name tag of the softmax/entropy tail, kept float32 in int8 exports.
_FLOAT_TAIL_LAYER = "softmax_entropy"


class _SoftmaxEntropy(keras.layers.Layer):
    """Softmax probabilities of logits and their per-sample entropy (reference formula)."""

    def call(self, logits):
        return keras.ops.softmax(logits, axis=-1), entropy(logits)


def segment_model(model, index):
    """Keras model of segment ``index`` (0-based), sharing the stage and head weights.

    Stage and head are in their folded inference form (:func:`folded_segment`):
    a chain of linear Dense layers is stored and computed as one Dense.
    """
    stage, head = folded_segment(model.stages[index]), folded_segment(model.heads[index])
    input_name = "image" if index == 0 else "features"
    inputs = keras.Input(shape=stage.inputs[0].shape[1:], name=input_name)
    features = stage(inputs)
    tail = _SoftmaxEntropy(name=f"exit_{index + 1}_{_FLOAT_TAIL_LAYER}", dtype="float32")
    probs, entropy = tail(head(features))
    outputs = {"probs": probs, "entropy": entropy}
    if index < model.num_exits - 1:
        outputs["next_features"] = features
    return keras.Model(inputs, outputs, name=f"segment_{index + 1}")


def full_model(model):
    """Keras model image -> final exit probabilities, without the side heads."""
    inputs = keras.Input(shape=model.image_shape, name="image")
    features = inputs
    for stage in model.stages:
        features = stage(features)
    probs = keras.layers.Softmax(name="final_softmax", dtype="float32")(model.heads[-1](features))
    return keras.Model(inputs, {"probs": probs}, name="full_model")


def convert(keras_model, quantization="float32", representative_inputs=None, sparse_encoding=False):
    """TFLite flatbuffer of a single-input ``keras_model``, quantized as ``quantization`` (signature
    ``serving_default``).

    ``representative_inputs`` (int8 only): array of the model's inputs, one sample per row.
    ``sparse_encoding``: also ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``, which stores
    sufficiently sparse weights (a pruned model's) in a sparse format.
    """
    spec = tf.TensorSpec(keras_model.inputs[0].shape, tf.float32, name=keras_model.inputs[0].name)
    return convert_signatures({SIGNATURE: (keras_model, spec)}, [keras_model], quantization,
                              None if representative_inputs is None else {SIGNATURE: representative_inputs},
                              sparse_encoding)


def convert_signatures(endpoints, tracked, quantization="float32", representative_inputs=None,
                       sparse_encoding=False):
    """One TFLite flatbuffer with a signature per endpoint, quantized as ``quantization``.

    Args:
        endpoints: signature name -> (function of one tensor, its ``tf.TensorSpec``,
            whose name becomes the signature's input name); the function returns
            a dict of named outputs or one tensor.
        tracked: the Keras models whose weights the functions use (stored once).
        quantization: one of ``QUANTIZATIONS``.
        representative_inputs (int8 only): signature name -> array of that
            signature's inputs, one sample per row.
        sparse_encoding: also ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``.
    """
    archive = keras.export.ExportArchive()
    for keras_model in tracked:
        archive.track(keras_model)
    for name, (function, spec) in endpoints.items():
        archive.add_endpoint(name, function, input_signature=[spec])
    with tempfile.TemporaryDirectory() as work, contextlib.redirect_stdout(io.StringIO()):
        saved_model = str(Path(work) / "saved_model")
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=list(endpoints))
        converter.optimizations = ([tf.lite.Optimize.DEFAULT] if quantization != "float32" else []) + (
            [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse_encoding else [])
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization != "int8":
            return converter.convert()
        converter.representative_dataset = lambda: (
            (name, {spec.name: sample[None]})
            for name, (_, spec) in endpoints.items() for sample in representative_inputs[name])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        return _quantize_with_float_tail(converter)


def _quantize_with_float_tail(converter):
    """Full-integer quantization, except softmax and entropy, which stay float32.

    An int8 softmax has a resolution of 1/256, so the entropy of a confident
    exit would round to 0 and every threshold below ~0.02 would route alike.
    The heads' logits stay int8; the tail (a few ops on C values) runs in float.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        # float32 model inputs by design (the segments quantize them inside)
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=converter.representative_dataset)
        calibrated = Interpreter(model_content=debugger.calibrated_model)
        float_tail = []
        for name in calibrated.get_signature_list():
            outputs = calibrated.get_signature_runner(name).get_output_details()
            float_tail += [d["name"] for key, d in outputs.items() if key in ("probs", "entropy")]
        for subgraph in range(calibrated.num_subgraphs()):
            float_tail += [d["name"] for d in calibrated.get_tensor_details(subgraph)
                           if _FLOAT_TAIL_LAYER in d["name"]]
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=sorted(set(float_tail)))
        return debugger.get_nondebug_quantized_model()


def tensor_specs(flatbuffer):
    """Signature name -> ``{"inputs", "outputs"}``: name -> :class:`~rdinet_lite.manifest.TensorSpec`."""
    interpreter = Interpreter(model_content=flatbuffer)
    specs = {}
    for name in sorted(interpreter.get_signature_list()):
        runner = interpreter.get_signature_runner(name)
        specs[name] = {
            "inputs": {key: _tensor_spec(d) for key, d in sorted(runner.get_input_details().items())},
            "outputs": {key: _tensor_spec(d) for key, d in sorted(runner.get_output_details().items())},
        }
    return specs


def _tensor_spec(details):
    dtype = np.dtype(details["dtype"])
    scale, zero_point = details["quantization"]
    return TensorSpec(tensor=details["name"], shape=tuple(int(n) for n in details["shape"]), dtype=dtype.name,
                      quantization=(Quantization(scale=float(scale), zero_point=int(zero_point))
                                    if dtype.kind in "iu" else None))


def bundle_endpoints(model, include_full=False, in_graph_exit=False):
    """The bundle's signatures: name -> (function, input spec), and the Keras models whose weights they use.

    ``segment_1`` .. ``segment_K`` always; ``full`` with ``include_full``;
    ``early_exit`` (image -> ``probs`` of the exit taken and its 0-based ``exit``)
    with ``in_graph_exit``.
    """
    segments = [segment_model(model, index) for index in range(model.num_exits)]
    endpoints = {segment_signature(index): (_single_input(segment), _input_spec(segment))
                 for index, segment in enumerate(segments)}
    tracked = [model]  # the folded layers use the model's variables without tracking them
    if include_full:
        full = full_model(model)
        endpoints[FULL_SIGNATURE] = (_single_input(full), _input_spec(full))
    if in_graph_exit:
        endpoints[IN_GRAPH_SIGNATURE] = (_in_graph_exit(segments, model.exit_policy.thresholds),
                                         _input_spec(segments[0], batch=1))
    return endpoints, tracked


def _single_input(keras_model):
    return lambda inputs: keras_model(inputs)


def _input_spec(keras_model, batch=None):
    shape = (batch, *keras_model.inputs[0].shape[1:])
    return tf.TensorSpec(shape, tf.float32, name=keras_model.inputs[0].name)


def _in_graph_exit(segments, thresholds):
    """image -> {probs, exit}: segment 1, then each later segment only if the entropy so far is too high
    (a closed exit has no test: its segment goes straight on to the next)."""
    last = len(segments) - 1
    is_open = open_side_exits(thresholds)

    def from_segment(index, inputs):
        outputs = segments[index](inputs)
        taken = (outputs["probs"], tf.constant([index], tf.int32))
        if index == last:
            return taken
        if not is_open[index]:
            return from_segment(index + 1, outputs["next_features"])
        return tf.cond(outputs["entropy"][0] < float(thresholds[index]), lambda: taken,
                       lambda: from_segment(index + 1, outputs["next_features"]))

    def early_exit(image):
        probs, exit_taken = from_segment(0, image)
        return {"probs": probs, "exit": exit_taken}

    return early_exit


def export_tflite(model, out_dir, quantization="float32", representative_images=None,
                  include_full=False, class_names=None, overwrite=False, in_graph_exit=False, inputs=()):
    """Write ``model`` as ``model.tflite`` (one signature per segment) plus ``manifest.json`` into ``out_dir``.

    Args:
        model: a :class:`rdinet_tf.models.MultiExitModel` with an ``exit_policy``.
        out_dir: bundle directory; must not exist or be empty unless ``overwrite``.
        quantization: one of ``QUANTIZATIONS``; ``"int8"`` needs ``representative_images``.
        representative_images: held-out float32 images in [0, 1], (N, H, W, C):
            int8 calibration data (a few hundred are typical) and, for any
            quantization, the images whose exit distribution the manifest records.
        include_full: also add the signature ``full`` (image -> final exit
            probabilities) for comparison; its weights are the segments'.
        class_names: optional list of class names recorded in the manifest.
        overwrite: replace an existing non-empty ``out_dir``.
        in_graph_exit: also add the signature ``early_exit``, the whole early
            exit in one graph (IF ops; thresholds fixed at export), run by
            ``EarlyExitRunner(..., in_graph=True)``.
        inputs: files ``out_dir`` must not hold (the model file exported), even with ``overwrite``.

    The bundle is built in a temporary directory next to ``out_dir`` and moved
    into place only when everything succeeded. A mixed-precision model is
    exported from its float32 copy (:func:`float32_network`), so the bundle
    is the same as from the float32 model with these weights.

    Returns:
        The manifest as written to ``out_dir/manifest.json`` (a dict; read it back as a
        :class:`rdinet_lite.manifest.Manifest` with ``Manifest.read(out_dir)``).
    """
    representative_images = _check_export_args(model, quantization, representative_images, class_names)
    model = float32_network(model)
    with files.staged_directory(out_dir, overwrite, inputs) as staging:
        return _write_bundle(model, staging, quantization, representative_images, include_full, in_graph_exit,
                             class_names)


def float32_network(model):
    """``model`` if every layer computes in float32, else a copy that does, with the same weights.

    A model built at a mixed precision keeps float32 variables and
    computes in 16 bits; TFLite converts float32 graphs (it has no bfloat16
    kernels), and every quantization of the export starts from float32.
    """
    if all(layer.compute_dtype == "float32" for layer in flat_layers(model)):
        return model
    copy = type(model).from_config(_float32_precisions(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def _float32_precisions(config):
    """A model config with every precision in it (a Keras ``DTypePolicy``) replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            return keras.saving.serialize_keras_object(keras.DTypePolicy("float32"))
        return {key: _float32_precisions(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_precisions(value) for value in config]
    return config


def check_exportable(model):
    """One clear error unless ``model`` is a multi-exit model with an exit policy for its exits."""
    if not isinstance(model, MultiExitNetwork):
        raise InputError(f"the export needs a rdinet_tf multi-exit model; got {type(model).__name__}")
    check_finite_weights(model, f"model {model.name!r}", "it is from a diverged training or corrupt; retrain it "
                         "with a lower --lr")
    if model.exit_policy is None:
        raise InputError(
            f"model {model.name!r} has no exit thresholds; calibrate them on held-out images "
            "first: model.exit_policy = ExitPolicy.calibrate(model, x_val) (rdinet_tf.exits.policy)"
        )
    if model.exit_policy.num_exits != model.num_exits:
        raise InputError(
            f"the model's exit_policy has {len(model.exit_policy.thresholds)} thresholds; "
            f"a {model.num_exits}-exit model needs {model.num_exits - 1}: recalibrate it"
        )


def _check_export_args(model, quantization, representative_images, class_names):
    """Representative images as checked float32 (or None); one clear error for a bad argument."""
    check_exportable(model)
    if quantization not in QUANTIZATIONS:
        raise InputError(f"unknown quantization {quantization!r}; choose one of {list(QUANTIZATIONS)}")
    if quantization == "int8" and (representative_images is None or len(representative_images) == 0):
        raise InputError(
            "int8 export needs representative_images (a few hundred held-out float32 "
            "images in [0, 1]) to calibrate activation ranges; on the command line "
            "pass --dataset and --data-dir"
        )
    if class_names is not None and len(class_names) != model.num_classes:
        raise InputError(f"class_names has {len(class_names)} names; the model has {model.num_classes} classes")
    return None if representative_images is None else model.check_images(representative_images)


def _write_bundle(model, bundle_dir, quantization, representative_images, include_full, in_graph_exit,
                  class_names):
    endpoints, tracked = bundle_endpoints(model, include_full, in_graph_exit)
    calibration = (_signature_inputs(model, representative_images, endpoints) if quantization == "int8"
                   else None)
    flatbuffer = convert_signatures(endpoints, tracked, quantization, calibration)
    (bundle_dir / BUNDLE_FILE).write_bytes(flatbuffer)
    specs = tensor_specs(flatbuffer)
    stage_macs, head_macs = flops.segment_macs(model)
    cumulative = {c: flops.exit_costs(model, c) for c in CONVENTIONS}
    segments = tuple(Segment(
        index=index,
        exit=f"exit_{index + 1}",
        signature=segment_signature(index),
        **specs[segment_signature(index)],
        cost_mflops={c: SegmentCost(segment=stage_macs[index].in_convention(c) + head_macs[index].in_convention(c),
                                    cumulative=float(cumulative[c][index])) for c in CONVENTIONS},
    ) for index in range(model.num_exits))
    full = None
    if include_full:
        full = FullModel(signature=FULL_SIGNATURE, **specs[FULL_SIGNATURE], cost_mflops={
            "honest": sum(s.in_convention("honest") for s in stage_macs) + head_macs[-1].in_convention("honest"),
            "paper": float(cumulative["paper"][-1]),
        })
    manifest = Manifest(
        file=BUNDLE_FILE,
        bytes=len(flatbuffer),
        sha256=hashlib.sha256(flatbuffer).hexdigest(),
        model_name=model.name,
        num_exits=model.num_exits,
        num_classes=model.num_classes,
        class_names=None if class_names is None else tuple(str(c) for c in class_names),
        precision=quantization,  # the bundle format's name for it
        precision_notes=QUANTIZATION_NOTES[quantization],
        int8_calibration_images=0 if calibration is None else int(len(representative_images)),
        input=InputSpec(shape=(1, *(int(n) for n in model.image_shape)), preprocessing=PREPROCESSING),
        thresholds=tuple(float(t) for t in model.exit_policy.thresholds),
        exit_rule=EXIT_RULE,
        entropy=ENTROPY_FORMULA,
        segments=segments,
        full_model=full,
        in_graph_exit=(InGraphExit(signature=IN_GRAPH_SIGNATURE, **specs[IN_GRAPH_SIGNATURE], note=IN_GRAPH_NOTE)
                       if in_graph_exit else None),
        cost_conventions=COST_NOTES,
        exit_distribution=_exit_distribution(model, representative_images),
    )
    manifest.write(bundle_dir)
    return manifest.to_json()


def _signature_inputs(model, images, endpoints):
    """Signature name -> the inputs it sees when the model runs on ``images`` (int8 calibration)."""
    inputs, features = {}, images
    for index in range(model.num_exits):
        inputs[segment_signature(index)] = features
        if index < model.num_exits - 1:
            features = model.stages[index].predict(features, batch_size=64, verbose=0)
    for name in (FULL_SIGNATURE, IN_GRAPH_SIGNATURE):
        if name in endpoints:
            inputs[name] = images
    return inputs


def _exit_distribution(model, images):
    """Exit shares of the Keras model on ``images`` (None without images)."""
    if images is None or len(images) == 0:
        return None
    shares = model.exit_policy.predict(model, images).exit_shares
    return ExitDistribution(shares=tuple(float(v) for v in shares), images=int(len(images)),
                            source="Keras float32 ExitPolicy.predict on the representative images")


def compare_with_keras(model, bundle_dir, images, labels=None, num_threads=None):
    """Agreement of a bundle's on-device early exit with Keras ``ExitPolicy.predict``.

    Returns a dict with the fraction of samples taking the same exit and the same
    prediction, the max probability difference over samples taking the same
    exit, both exit distributions and, with ``labels``, both accuracies.
    """
    reference = model.exit_policy.predict(model, images)
    bundle = EarlyExitRunner(bundle_dir, num_threads=num_threads).run_batch(images)
    same_exit = bundle.exits == reference.exits
    keras_probs = tf.nn.softmax(np.stack(predict_exit_logits(model, images), 1), -1).numpy()
    keras_probs = keras_probs[np.arange(len(images)), bundle.exits]
    report = {
        "samples": int(len(images)),
        "same_exit": float(same_exit.mean()),
        "same_prediction": float((bundle.predictions == reference.predictions).mean()),
        "same_exit_and_prediction": float(
            (same_exit & (bundle.predictions == reference.predictions)).mean()),
        "max_prob_diff": float(np.abs(bundle.probabilities - keras_probs).max()),
        "keras_exit_shares": reference.exit_shares.tolist(),
        "tflite_exit_shares": bundle.exit_shares.tolist(),
    }
    if labels is not None:
        report["keras_accuracy"] = reference.accuracy(labels)
        report["tflite_accuracy"] = bundle.accuracy(labels)
        report["accuracy_change"] = report["tflite_accuracy"] - report["keras_accuracy"]
    return report


def gzip_size(payload):
    """Bytes of ``payload`` after gzip (level 9): the download size of a model file."""
    return len(gzip.compress(payload, compresslevel=9, mtime=0))
