"""Deployment: export a multi-exit model as a bundle of TFLite segments (see :mod:`rdinet_tf.export.tflite`).

``python -m rdinet_tf.export --tflite --model model.keras --out bundle/`` runs
the command line (:mod:`rdinet_tf.cli.export`).
"""

from rdinet_tf.export.tflite import (CLASS_NAMES, FULL_MODEL_FILE, PRECISIONS, compare_with_keras, convert,
                                     export_tflite, full_model, gzip_size, segment_model,
                                     tensor_specs)

__all__ = ["CLASS_NAMES", "FULL_MODEL_FILE", "PRECISIONS", "compare_with_keras", "convert", "export_tflite",
           "full_model", "gzip_size", "segment_model", "tensor_specs"]
