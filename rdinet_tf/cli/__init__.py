"""Every command line of rdinet_tf, sharing the argument helpers and the error convention of :mod:`.common`.

Console scripts (pyproject.toml): ``rdinet-train``, ``rdinet-evaluate``, ``rdinet-export``, ``rdinet-prune``,
``rdinet-import-torch`` and the device side's ``rdinet-bench``. ``python -m rdinet_tf.<subpackage>`` runs the
subpackage's command, or names the one to run (:mod:`.commands`). A command builds its parser from plain values
(:mod:`rdinet_tf.catalog`) and imports TensorFlow only after parsing, so ``--help`` answers at once.
"""

import logging

# TensorFlow's Python warnings (tf.function retracing) are noise on a command line; a level the user set wins.
if logging.getLogger("tensorflow").level == logging.NOTSET:
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
