"""Deployment: export a multi-exit model as one TFLite file with a signature per segment (see :mod:`rdinet_tf.export.tflite`).

``python -m rdinet_tf.export --tflite --model model.keras --out bundle/`` runs
the command line (:mod:`rdinet_tf.cli.export`).
"""

from rdinet_tf.export.tflite import (CLASS_NAMES, PRECISIONS, bundle_endpoints, compare_with_keras, convert,
                                     convert_signatures, export_tflite, full_model, gzip_size, segment_model,
                                     tensor_specs)

__all__ = ["CLASS_NAMES", "PRECISIONS", "bundle_endpoints", "compare_with_keras", "convert", "convert_signatures",
           "export_tflite", "full_model", "gzip_size", "segment_model", "tensor_specs"]
