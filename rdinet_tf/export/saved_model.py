"""Export a multi-exit model as a TensorFlow SavedModel whose ``serving_default`` signature does the early exit.

The signature takes ``images`` (N, H, W, C) float32 pixels in [0, 1] and runs
stage k only on the images still present after exit k-1
(:func:`rdinet_tf.exits.policy.early_exit_function`, thresholds fixed at export),
returning per image

* ``class``: the predicted class (int64),
* ``probabilities``: the softmax of the exit taken (float32, (N, C)),
* ``exit``: the exit taken, 1-based (int32),
* ``cost_mflops``: that exit's honest cost (:func:`rdinet_tf.architecture.flops.exit_costs`:
  conv + dense MACs / 1e6, every head evaluated on the way counted; float32).

Optional signature ``full``: the final exit only (``class``, ``probabilities``),
for comparison. The SavedModel is plain TensorFlow: ``tf.saved_model.load``
and TensorFlow Serving read it without rdinet_tf. Images outside [0, 1] or
not finite are refused inside the graph (``InvalidArgumentError``), where
:func:`rdinet_lite.inputs.check_images` cannot run.

Command line: ``python -m rdinet_tf.export --saved-model DIR --model model.keras``
writes ``DIR/1`` (the version folder TensorFlow Serving expects).
"""

import contextlib
import io

import keras
import tensorflow as tf

from rdinet_lite import files
from rdinet_tf.architecture import flops
from rdinet_tf.export.tflite import check_exportable
from rdinet_tf.exits.policy import early_exit_function

SERVING_SIGNATURE = "serving_default"
FULL_SIGNATURE = "full"
INPUT_NAME = "images"
PIXEL_RANGE_MESSAGE = ("images must be float32 pixels in [0, 1] with no NaN or infinity (no other preprocessing; "
                       "divide 0..255 images by 255)")


def serving_function(model, thresholds):
    """``images -> {class, probabilities, exit (1-based), cost_mflops}``: early exit under ``thresholds``."""
    early_exit = early_exit_function(model, thresholds)
    costs = tf.constant(flops.exit_costs(model, "honest", thresholds=thresholds), tf.float32)

    def serve(images):
        with tf.control_dependencies([_check_pixels(images)]):
            logits, exits = early_exit(images)
        return {"class": tf.argmax(logits, axis=-1), "probabilities": tf.nn.softmax(logits, axis=-1),
                "exit": exits + 1, "cost_mflops": tf.gather(costs, exits)}

    return serve


def full_function(model):
    """``images -> {class, probabilities}`` of the final exit: every stage and the last head, folded."""
    stages, heads = model.inference_segments()

    def forward(images):
        features = images
        for stage in stages:
            features = stage(features, training=False)
        return heads[-1](features, training=False)

    def full(images):
        with tf.control_dependencies([_check_pixels(images)]):
            logits = tf.cond(tf.shape(images)[0] > 0, lambda: forward(images),  # as early_exit_function
                             lambda: tf.zeros((0, model.num_classes), tf.float32))
        return {"class": tf.argmax(logits, axis=-1), "probabilities": tf.nn.softmax(logits, axis=-1)}

    return full


def _check_pixels(images):
    inside = tf.reduce_all((images >= 0) & (images <= 1))  # False for NaN and infinities; True for no images
    return tf.debugging.Assert(inside, [PIXEL_RANGE_MESSAGE])


def export_saved_model(model, out_dir, include_full=False, overwrite=False, inputs=()):
    """Write ``model`` with its ``exit_policy`` as a SavedModel at ``out_dir`` (see the module doc).

    Args:
        model: a multi-exit model with an ``exit_policy``.
        out_dir: the SavedModel directory (for TensorFlow Serving: a numeric
            version folder, ``base/1``); must not exist or be empty unless ``overwrite``.
        include_full: also add the signature ``full`` (final exit only).
        overwrite: replace an existing non-empty ``out_dir``.
        inputs: files the export reads (e.g. the model file): never replaced, even with ``overwrite``.

    Written in a temporary directory beside ``out_dir`` and moved into place
    only when complete. Returns the signature names.
    """
    check_exportable(model)
    spec = tf.TensorSpec((None, *model.image_shape), tf.float32, name=INPUT_NAME)
    archive = keras.export.ExportArchive()
    archive.track(model)  # the folded layers compute from the model's variables
    archive.add_endpoint(SERVING_SIGNATURE, serving_function(model, model.exit_policy.thresholds),
                         input_signature=[spec])
    if include_full:
        archive.add_endpoint(FULL_SIGNATURE, full_function(model), input_signature=[spec])
    with files.staged_directory(out_dir, overwrite, inputs) as staging, contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(str(staging), verbose=False)
    return [SERVING_SIGNATURE] + ([FULL_SIGNATURE] if include_full else [])


def compare_saved_model(model, saved_model_dir, images):
    """Agreement of a SavedModel's ``serving_default`` with Keras ``ExitPolicy.predict`` on ``images``.

    Returns the fraction of images taking the same exit, getting the same
    prediction, both, and the served mean cost (honest MFLOPs).
    """
    images = model.check_images(images)
    served = tf.saved_model.load(str(saved_model_dir)).signatures[SERVING_SIGNATURE]
    outputs = {name: value.numpy() for name, value in served(**{INPUT_NAME: tf.constant(images)}).items()}
    reference = model.exit_policy.predict(model, images)
    same_exit, same_prediction = outputs["exit"] - 1 == reference.exits, outputs["class"] == reference.predictions
    return {"samples": int(len(images)), "same_exit": float(same_exit.mean()),
            "same_prediction": float(same_prediction.mean()),
            "same_exit_and_prediction": float((same_exit & same_prediction).mean()),
            "mean_cost_mflops": float(outputs["cost_mflops"].mean())}
