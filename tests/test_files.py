import json
import os
import pathlib

import keras
import pytest

from rdinet_tf import files
from rdinet_tf.errors import InputError


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

    def broken_save(path, *args, **kwargs):
        pathlib.Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        files.save_model(model, tmp_path / "model.keras")
    assert os.listdir(tmp_path) == []


def test_write_json_replaces_only_on_success(tmp_path):
    path = tmp_path / "out" / "summary.json"
    files.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        files.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(path.parent) == ["summary.json"]


def test_load_model_names_the_missing_file(tmp_path):
    with pytest.raises(InputError, match="no .keras model file"):
        files.load_model(tmp_path / "model.keras")


def test_saved_model_loads_in_a_fresh_process_after_import_rdinet_tf(tmp_path):
    import subprocess
    import sys

    from rdinet_tf import models

    path = tmp_path / "m.keras"
    models.build("smallcnn").save(path)
    script = ("import sys, rdinet_tf.files as f; m = f.load_model(sys.argv[1]); "
              "print(type(m).__name__, m.num_exits)")
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.split() == ["MultiExitModel", "3"], result.stderr[-2000:]
