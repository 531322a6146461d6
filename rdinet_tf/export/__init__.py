"""Deployment: export a multi-exit model as one TFLite file with a signature per segment
(:mod:`rdinet_tf.export.tflite`) or as a SavedModel doing the early exit for TensorFlow Serving
(:mod:`rdinet_tf.export.saved_model`).

``python -m rdinet_tf.export --tflite --model model.keras --out bundle/`` (or
``--saved-model DIR``) runs the command line (:mod:`rdinet_tf.cli.export`).
"""

from rdinet_tf.export.tflite import (CLASS_NAMES, QUANTIZATIONS, bundle_endpoints, compare_with_keras, convert,
                                     convert_signatures, export_tflite, full_model, gzip_size, segment_model,
                                     tensor_specs)
from rdinet_tf.export.saved_model import compare_saved_model, export_saved_model

__all__ = ["CLASS_NAMES", "QUANTIZATIONS", "bundle_endpoints", "compare_saved_model", "compare_with_keras", "convert",
           "convert_signatures", "export_saved_model", "export_tflite", "full_model", "gzip_size", "segment_model",
           "tensor_specs"]
