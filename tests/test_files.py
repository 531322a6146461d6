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
