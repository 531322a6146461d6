"""Every command line of rdinet_tf, sharing the argument helpers and the error convention of :mod:`.common`.

Console scripts (pyproject.toml): ``rdinet-train``, ``rdinet-evaluate``, ``rdinet-export``,
``rdinet-prune``, ``rdinet-import-torch``, ``rdinet-bench``; ``python -m
rdinet_tf.train`` and ``python -m rdinet_tf.export --tflite`` run the first and third.
"""

import logging

# TensorFlow's Python warnings (tf.function retracing) are noise on a command line; a level the user set wins.
if logging.getLogger("tensorflow").level == logging.NOTSET:
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
