"""Every command line of rdinet_tf, sharing the argument helpers and the error convention of :mod:`.common`.

Console scripts (setup.py): ``rdinet-train``, ``rdinet-evaluate``, ``rdinet-export``,
``rdinet-prune``, ``rdinet-import-torch``, ``rdinet-bench``; ``python -m
rdinet_tf.train`` and ``python -m rdinet_tf.export --tflite`` run the first and third.
"""
