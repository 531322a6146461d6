import json
import os
import pathlib
import stat
import subprocess
import sys

import keras
import pytest

from rdinet_tf import models
from rdinet_lite import files
from rdinet_lite.errors import InputError


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

    def broken_save(path, *args, **kwargs):
        pathlib.Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        files.publish(tmp_path, {"model.keras": model.save})
    assert os.listdir(tmp_path) == []


def test_publish_writes_every_output_or_none(tmp_path):
    out = tmp_path / "run"

    def fail(path):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.publish(out, {"summary.json": files.json_writer({"a": 1}), "model.keras": fail})
    assert os.listdir(tmp_path) == []  # the directory created for the run is gone too
    files.publish(out, {"summary.json": files.json_writer({"a": 1}),
                        "notes.txt": lambda path: pathlib.Path(path).write_text("done")})
    assert sorted(os.listdir(out)) == ["notes.txt", "summary.json"]
    assert json.loads((out / "summary.json").read_text()) == {"a": 1}
    with pytest.raises(InputError, match="is a file"):
        files.publish(out / "notes.txt", {"x.json": files.json_writer({})})


def test_outputs_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        files.write_json(tmp_path / "summary.json", {"a": 1})
        with files.staged_directory(tmp_path / "bundle") as staging:
            (staging / "manifest.json").write_text("{}")
    finally:
        os.umask(mask)
    for path in (tmp_path / "summary.json", tmp_path / "bundle" / "manifest.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((tmp_path / "bundle").stat().st_mode) == 0o755


def test_write_json_replaces_only_on_success(tmp_path):
    path = tmp_path / "out" / "summary.json"
    files.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        files.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(path.parent) == ["summary.json"]


def test_load_model_names_the_missing_file(tmp_path):
    with pytest.raises(InputError, match="no .keras model file"):
        models.load(tmp_path / "model.keras")


@pytest.mark.slow
def test_saved_model_loads_in_a_fresh_process_after_import_rdinet_tf(tmp_path):
    path = tmp_path / "m.keras"
    models.build("smallcnn").save(path)
    script = ("import sys, keras, rdinet_tf; m = keras.models.load_model(sys.argv[1]); "
              "print(type(m).__name__, m.num_exits)")
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.split() == ["MultiExitModel", "3"], result.stderr[-2000:]
