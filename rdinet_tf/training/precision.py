"""Mixed precision for the models built from now on."""

import contextlib

import keras

from rdinet_lite.errors import InputError
from rdinet_tf.catalog import PRECISIONS




def set_precision(precision):
    """Make the models built from now on compute in ``precision``, one of ``PRECISIONS``.

    Sets Keras's global dtype policy; variables stay float32. A model keeps the precision it was built with,
    also when saved and loaded; ``set_precision("float32")`` restores the default.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    keras.config.set_dtype_policy(precision)


@contextlib.contextmanager
def precision_scope(precision):
    """:func:`set_precision` for the models built inside the block; the previous precision is restored after."""
    previous = keras.config.dtype_policy()
    set_precision(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
