"""Bad inputs replayed through the command lines and the API: one clear error, nothing left behind."""

import os
import pickle
import re
import socket
import time
import zipfile

import numpy as np
import pytest

from rdinet_tf import data, models
from rdinet_tf import attacks
from rdinet_tf.cli import evaluate, export, prune, train
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import ExitPolicy

TRAIN = ["--dataset", "digits", "--fast", "--epochs", "1", "--steps-per-epoch", "1", "--quiet"]

CLI_CASES = [
    (train.main, ["--epochs", "0"], "argument --epochs: must be >= 1; got 0"),
    (train.main, ["--epochs", "-1"], "argument --epochs: must be >= 1; got -1"),
    (train.main, ["--batch-size", "0"], "argument --batch-size: must be >= 1"),
    (train.main, ["--steps-per-epoch", "0"], "argument --steps-per-epoch: must be >= 1"),
    (train.main, ["--attack-steps", "0"], "argument --attack-steps: must be >= 1"),
    (train.main, ["--batch-size", "-1"], "argument --batch-size: must be >= 1"),
    (train.main, ["--lr", "0"], "argument --lr: must be > 0"),
    (train.main, ["--eps", "nan"], "argument --eps: must be >= 0"),
    (train.main, ["--eps", "5"], "eps in \\[0, 1\\]"),
    (train.main, ["--exit-weights", "a,b,c"], "--exit-weights must be comma-separated numbers"),
    (train.main, ["--eval-attacks", "pgdd"], "unknown attack 'pgdd'"),
    (train.main, ["--model", "resnet38"], "takes \\(32, 32, 3\\) images"),
    (train.main, ["--slowdown-attack-steps", "3"], "give it together with --slowdown-weight"),
    (train.main, ["--neo-kd", "1"], "--neo-kd must be two comma-separated weights"),
    (train.main, ["--neo-kd", "1,-1"], "NeoKD needs non-negative finite weights"),
    (train.main, ["--neo-kd", "1,1", "--defense", "none"], "--neo-kd distils onto the adversarial batch"),
    (train.main, ["--exit-weights", "1,2"], "exit_weights must be 3 non-negative numbers"),
    (train.main, ["--eval-objectives", "exit_9"], "unknown attack objective 'exit_9'"),
    (train.main, ["--eval-objectives", ","], "--eval-objectives names no objective"),
    (train.main, ["--eval-samples", "0"], "argument --eval-samples: must be >= 1"),
    (train.main, ["--out", "/sys/rdinet-run"], "cannot write into /sys"),
    (evaluate.main, ["--samples", "-350"], "argument --samples: must be >= 1"),
    (evaluate.main, ["--samples", "ten"], "argument --samples: 'ten' is not an integer"),
]


@pytest.mark.parametrize("main, extra, message", CLI_CASES, ids=lambda c: " ".join(c) if isinstance(c, list) else "")
def test_command_line_errors_are_one_line_with_exit_code_2(main, extra, message, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ([*TRAIN, "--out", str(out)] if main is train.main
            else ["--model", str(tmp_path / "missing.keras"), "--dataset", "digits"]) + extra
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


@pytest.mark.parametrize("make", [
    lambda: attacks.PGD(1.5, 0.1, 10), lambda: attacks.PGD(float("inf"), 0.1, 10),
    lambda: attacks.PGD(0.3, 0.01, 0), lambda: attacks.WRM(0.3, steps=0), lambda: attacks.RandomNoise(-0.3),
    lambda: ExitPolicy(["a"]), lambda: ExitPolicy([float("nan")]),
])
def test_bad_attack_and_policy_settings_are_refused(make):
    with pytest.raises(InputError):
        make()


@pytest.fixture(scope="module")
def model():
    return models.build("smallcnn")


@pytest.mark.parametrize("images, message", [
    (np.full((4, 28, 28, 1), 255, np.uint8), "float32 pixels"),
    (np.full((4, 28, 28, 1), 255.0, np.float32), "pixels must be in \\[0, 1\\]"),
    (np.full((4, 28, 28, 1), np.nan, np.float32), "NaN"),
    (np.zeros((4, 32, 32, 3), np.float32), "shape"),
])
def test_images_are_checked_where_they_enter(model, images, message):
    entries = [lambda: ExitPolicy.calibrate(model, images), lambda: ExitPolicy([0.1, 0.1]).predict(model, images),
               lambda: attacks.generate(model, images, np.zeros(4, np.int32), attacks.fgsm(0.1), "average")]
    if message != "shape":  # make_dataset takes any image shape
        entries.append(lambda: data.make_dataset(images, np.zeros(4, np.int32), 2))
    for enter in entries:
        with pytest.raises(InputError, match=message):
            enter()


@pytest.mark.parametrize("labels, message", [(np.array([0.5, 1, 2, 3]), "integer class indices"),
                                             (np.array([0, 1, 2, -1]), "class indices"),
                                             (np.array([0, 1]), "expected 4 labels")])
def test_labels_are_checked(labels, message):
    with pytest.raises(InputError, match=message):
        data.make_dataset(np.zeros((4, 28, 28, 1), np.float32), labels, 2)
    with pytest.raises(InputError, match="batch_size must be 1 or more"):
        data.make_dataset(np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int32), 0)


def test_a_malicious_cifar_batch_is_refused_before_its_payload_runs(tmp_path):
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    official = {b"batch_label": b"training batch 1 of 5", b"labels": [3, 5],
                b"data": np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072), b"filenames": [b"a.png", b"b.png"]}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):  # the official files are protocol 2
        (folder / "data_batch_1").write_bytes(pickle.dumps(official, protocol=protocol))
        images, labels = data._read_cifar_batch(folder / "data_batch_1")
        assert images.shape == (2, 32, 32, 3) and labels.tolist() == [3, 5]
        assert images[0, 0, 0].tolist() == [0, 1024 % 256, 2048 % 256]  # CHW rows -> HWC
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}))
    with pytest.raises(data.DataError, match="refused to load posix.system"):
        data.load("cifar10", data_dir=tmp_path, source="local")
    assert not marker.exists()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    from rdinet_tf.export import export_tflite

    network = models.build("smallcnn")
    network.exit_policy = ExitPolicy([0.5, 0.5])
    out = tmp_path_factory.mktemp("bundle") / "b"
    export_tflite(network, out)
    return out


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(thresholds=[float("nan"), 0.5]), "'thresholds' must be 2 finite non-negative numbers"),
    (lambda m: m.update(thresholds=[-1.0, 0.5]), "'thresholds' must be 2 finite non-negative numbers"),
    (lambda m: m.update(file="../../other/model.tflite"), "plain file name inside the bundle"),
])
def test_the_runtime_refuses_a_tampered_manifest(bundle_dir, tmp_path, edit, message):
    import json
    import shutil

    from rdinet_lite.runner import EarlyExitRunner

    copy = tmp_path / "edited"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=message):
        EarlyExitRunner(copy)


def test_a_killed_export_leaves_nothing_the_next_one_keeps(bundle_dir, tmp_path, umask):
    from rdinet_lite import files

    dead = 2**22 + 1  # above Linux's largest process id: never a running process
    (tmp_path / f".bundle.tmp-{dead}-killed").mkdir()
    (tmp_path / f".summary.{dead}-killed.json").write_text("")
    (tmp_path / f".bundle.tmp-{os.getpid()}-live").mkdir()  # a running process's: kept
    with files.staged_directory(tmp_path / "bundle") as staging:
        (staging / "manifest.json").write_text("{}")
    files.write_json(tmp_path / "summary.json", {"ok": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".bundle.tmp-{os.getpid()}-live", "bundle", "summary.json"]
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_importer_refuses_nan_weights():
    from rdinet_tf.models.torch_checkpoint import load_state_dict

    pytest.importorskip("torch")
    from rdinet_tf.models.torch_reference import REFERENCE_MODELS

    state = {k: v.numpy() for k, v in REFERENCE_MODELS["smallcnn"]().state_dict().items()}
    state["fc3.weight"] = np.full_like(state["fc3.weight"], np.nan)
    model = models.build("smallcnn")
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(InputError, match="'fc3.weight' holds NaN"):
        load_state_dict(model, state, "smallcnn")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.fixture
def no_data_load(monkeypatch):
    """Make any data loading fail the test: the checks must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the arguments were checked")

    monkeypatch.setattr(data, "load", refuse)


@pytest.fixture(scope="module")
def bad_model_files(tmp_path_factory, digits_model):
    """A .keras path per way a model file can be wrong, with the error it must give."""
    folder = tmp_path_factory.mktemp("bad_models")
    good = folder / "good.keras"
    digits_model.save(good)
    cases = {}
    truncated = folder / "truncated.keras"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases[truncated] = "is not a .keras archive"
    noise = folder / "random.keras"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    cases[noise] = "is not a .keras archive"
    no_config = folder / "no_config.keras"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(no_config, "w") as target:
        for name in source.namelist():
            if name != "config.json":
                target.writestr(name, source.read(name))
    cases[no_config] = "lacks config.json"
    plain = folder / "plain.keras"
    import keras

    keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(plain)
    cases[plain] = "holds a Sequential, not an rdinet_tf multi-exit model"
    return cases


@pytest.mark.parametrize("command", ["evaluate", "export", "prune"])
def test_a_bad_model_file_is_named_with_the_fix(command, bad_model_files, tmp_path, cli_error, no_data_load):
    out = tmp_path / "out"
    for path, message in bad_model_files.items():
        argv = {"evaluate": (evaluate.main, ["--model", str(path), "--dataset", "digits"]),
                "export": (export.main, ["--tflite", "--model", str(path), "--out", str(out)]),
                "prune": (prune.main, ["--model", str(path), "--dataset", "digits", "--out", str(out),
                                       "--target-sparsity", "0.5"])}[command]
        error = cli_error(*argv)
        assert message in error and str(path) in error, error
        assert not out.exists()


def test_output_locations_are_checked_before_any_data_is_loaded(tmp_path, digits_model, cli_error, no_data_load):
    model_file = tmp_path / "model.keras"
    digits_model.save(model_file)
    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    (folder / "kept").write_text("")
    cases = [
        (evaluate.main, ["--model", str(model_file), "--dataset", "digits", "--out", str(folder)], "is a directory"),
        (evaluate.main, ["--model", str(model_file), "--dataset", "digits", "--out", str(a_file / "r.json")],
         "which is a file"),
        (evaluate.main, ["--model", str(model_file), "--dataset", "digits", "--objectives", "exit_7"],
         "unknown attack objective 'exit_7'"),
        (export.main, ["--tflite", "--model", str(model_file), "--out", str(folder), "--dataset", "digits"],
         "not an empty directory"),
        (prune.main, ["--model", str(model_file), "--dataset", "digits", "--out", str(a_file),
                      "--target-sparsity", "0.5"], "is a file"),
        (train.main, [*TRAIN, "--out", str(a_file)], "is a file"),
    ]
    for main, argv, message in cases:
        assert message in cli_error(main, argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder", "model.keras"]
    assert [p.name for p in folder.iterdir()] == ["kept"]


def test_an_empty_validation_split_stops_training_before_it_starts(tmp_path, cli_error):
    images = np.zeros((4, 28, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=np.arange(4), x_test=images, y_test=np.arange(4))
    out = tmp_path / "run"
    error = cli_error(train.main, [*TRAIN[2:], "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(out)])
    assert "validation split of mnist" in error and "is empty" in error
    assert not out.exists()


def test_an_unreachable_download_host_fails_within_seconds(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on: connections are refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setitem(data.DOWNLOAD_HOSTS, "mnist", ("127.0.0.1", port))
    start = time.monotonic()
    with pytest.raises(data.DataError, match="127.0.0.1:.* cannot be reached.*--data-dir DIR"):
        data.load("mnist", source="tfds", data_dir=str(tmp_path / "tfds"))
    assert time.monotonic() - start < 30
