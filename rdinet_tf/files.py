"""Writing outputs atomically: a failed run never leaves a half-written file behind."""

import contextlib
import json
import os
import tempfile
from pathlib import Path

from rdinet_tf.errors import InputError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path, data):
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as temporary, open(temporary, "w") as stream:
        json.dump(data, stream, indent=2)
        stream.write("\n")


def save_model(model, path):
    """``model.save(path)`` (a ``.keras`` file), atomically."""
    with atomic_path(path) as temporary:
        model.save(temporary)


def load_model(path):
    """``keras.models.load_model`` with one clear error for a missing or wrong file."""
    import keras

    path = Path(path)
    if path.suffix != ".keras" or not path.is_file():
        raise InputError(f"no .keras model file at {path}; pass the model.keras written by "
                         "`python -m rdinet_tf.train --out DIR` (DIR/model.keras)")
    return keras.models.load_model(path)
