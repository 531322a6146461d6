"""Tampered bundles, outputs onto inputs, diverged models, concurrent runs, damaged backups, bad clusters:
each refused with one clear error (exit code 2, one line) and nothing replaced or left behind."""

import io
import json
import os
import signal
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from epoch_callbacks import CountEpochs, StopAfter

from rdinet_tf import data, models
from rdinet_lite import latency
from rdinet_tf.training import placement
from rdinet_lite import files
from rdinet_tf.cli import evaluate, export, import_torch, prune, train
from rdinet_lite import arguments
from rdinet_lite import bench, edge
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import ExitPolicy
from rdinet_lite.manifest import Manifest
from rdinet_lite.runner import EarlyExitRunner
from test_latency import ANDROID_LOG, FAKE_ADB, FAKE_BENCHMARK_MODEL, MANIFEST, manifest_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["--dataset", "digits", "--fast", "--epochs", "1", "--steps-per-epoch", "1", "--quiet"]
RESUME = ["--model", "smallcnn", "--dataset", "digits", "--defense", "main", "--fast", "--epochs", "3",
          "--steps-per-epoch", "2", "--batch-size", "32", "--eval-attack-steps", "1", "--eval-samples", "16",
          "--eval-objectives", "exit_3", "--quiet"]


@pytest.fixture
def no_data_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the arguments were checked")

    monkeypatch.setattr(data, "load", refuse)


@pytest.fixture
def run_dir(tmp_path, digits_model):
    """A finished training run: model.keras + summary.json."""
    run = tmp_path / "run"
    run.mkdir()
    digits_model.save(run / "model.keras")
    (run / "summary.json").write_text("{}\n")
    return run


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fake_bundle(folder, edit=None):
    """A bundle of the latency tests' manifest with a placeholder file (the device tools need no real model)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(b"flatbuffer")
    manifest = manifest_json()
    if edit:
        edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


# ----------------------------------------------------------------------------- tampered bundles, shell


INJECTION = "segment_1;touch${IFS}INJECTED;#"


def test_a_signature_name_that_would_reach_a_shell_is_refused(tmp_path, cli_error):
    bundle = _fake_bundle(tmp_path / "bundle", lambda m: m["segments"][0].update(signature=INJECTION))
    assert "segment 1: 'signature' must be a name of letters, digits, _ . -" in cli_error(
        bench.main, ["--bundle", str(bundle), "--plan"])
    injected = manifest_json()
    injected["full_model"]["signature"] = INJECTION
    with pytest.raises(InputError, match="'full_model': 'signature' must be a name of letters, digits"):
        Manifest.from_json(injected)
    for name, text in {"adb": FAKE_ADB, "benchmark_model": FAKE_BENCHMARK_MODEL}.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    env = dict(os.environ, ADB=str(tmp_path / "adb"), DEVICE_DIR=str(tmp_path / "device"), PYTHON=sys.executable)
    completed = subprocess.run(["bash", "device/android_benchmark.sh", str(bundle), str(tmp_path / "benchmark_model"),
                                str(tmp_path / "logs")], env=env, capture_output=True, text=True, timeout=120,
                               cwd=ROOT)
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()  # (TensorFlow's start-up log may come first)
    assert lines[-1].startswith("error: ") and "Traceback" not in completed.stderr, completed.stderr
    assert not list(tmp_path.rglob("INJECTED")) and not (tmp_path / "device").exists()


@pytest.mark.slow
def test_the_android_script_quotes_what_it_passes_to_the_device_shell(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundle")
    for name, text in {"adb": FAKE_ADB, "benchmark_model": FAKE_BENCHMARK_MODEL}.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    device = tmp_path / "dev ice;touch INJECTED;'x"
    env = dict(os.environ, ADB=str(tmp_path / "adb"), DEVICE_DIR=str(device), PYTHON=sys.executable)
    completed = subprocess.run(["bash", "device/android_benchmark.sh", str(bundle), str(tmp_path / "benchmark_model"),
                                str(tmp_path / "logs")], env=env, capture_output=True, text=True, timeout=120,
                               cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert (device / "logs" / "segment_1.log").is_file()
    assert not list(tmp_path.rglob("INJECTED")) and not list(__import__("pathlib").Path(ROOT).glob("INJECTED"))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("sha256"), "has no 'sha256' entry"),
    (lambda m: m.update(sha256="0" * 64), "does not match the manifest's sha256"),
    (lambda m: m.update(num_exits="3"), "'num_exits' must be a positive integer"),
    (lambda m: m.update(thresholds=["0.1", 0.2]), "'thresholds' must be 2 finite"),
    (lambda m: m.update(input={"shape": "1,28,28,1"}), "'input': 'shape' must be [1, H, W, C]"),
    (lambda m: m["segments"][1]["cost_mflops"]["honest"].update(cumulative="4"),
     "segment 2: 'cost_mflops.honest': 'segment' and 'cumulative' must be finite"),
    (lambda m: m["full_model"]["cost_mflops"].update(honest=0), "'full_model': 'cost_mflops.honest' must be"),
    (lambda m: m.update(exit_distribution={"shares": [float("nan"), 0.5, 0.5]}),
     "'exit_distribution': 'shares' must be finite"),
    (lambda m: m.update(exit_distribution={"shares": [0.5, 0.5]}), "'exit_distribution.shares' must hold 3"),
    (lambda m: m["segments"][2]["outputs"].update(probs={"tensor": "p", "shape": [1, -10], "dtype": "float32"}),
     "segment 3: output 'probs': 'shape' must be a list of non-negative integers"),
    (lambda m: m["segments"][0].pop("inputs"), "segment 1 has no 'inputs' entry"),
    (lambda m: m.update(format_version=3), "format version 3; this library reads version 2"),
    (lambda m: m.update(segments={"a": 1}), "'segments' must list 3"),
    (lambda m: m.update(file="model.tflite; rm -rf /"), "plain file name"),
])
def test_every_manifest_field_is_checked_where_the_manifest_is_read(tmp_path, edit, message, cli_error):
    bundle = _fake_bundle(tmp_path / "bundle", edit)
    assert message in cli_error(bench.main, ["--bundle", str(bundle), "--plan"])
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("segment_1", "segment_2", "segment_3", "full"):
        (logs / f"{name}.log").write_text(ANDROID_LOG)
    if "sha256" not in message:  # combining logs does not read the model file
        assert message in cli_error(bench.main, ["--bundle", str(bundle), "--logs", str(logs), "--out",
                                                 str(tmp_path / "l.csv")])
    assert not (tmp_path / "l.csv").exists()


def test_edge_follows_the_error_convention(tmp_path, cli_error):
    main = edge.main
    bundle = _fake_bundle(tmp_path / "bundle", lambda m: m.update(num_exits=[3]))
    assert "'num_exits' must be a positive integer" in cli_error(main, ["--bundle", str(bundle), "--out",
                                                                        str(tmp_path / "e.csv")])
    assert "--threads: must be >= 1" in cli_error(main, ["--bundle", str(bundle), "--threads", "0"])
    with pytest.raises(InputError, match="num_threads must be a positive integer"):
        EarlyExitRunner(bundle, num_threads=0)


@pytest.mark.parametrize("log, message", [
    ("Inference timings in us: Init: 1, Inference (avg): 1e999", "not a positive finite number"),
    ("Inference timings in us: Init: 1, Inference (avg): 0", "not a positive finite number"),
])
def test_benchmark_logs_must_hold_a_positive_finite_time(tmp_path, log, message, cli_error):
    bundle = _fake_bundle(tmp_path / "bundle")
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("segment_1", "segment_2", "segment_3", "full"):
        (logs / f"{name}.log").write_text(ANDROID_LOG)
    (logs / "full.log").write_text(log)
    error = cli_error(bench.main, ["--bundle", str(bundle), "--logs", str(logs), "--out", str(tmp_path / "l.csv")])
    assert message in error and "full.log" in error
    assert not (tmp_path / "l.csv").exists()


@pytest.mark.parametrize("text, message", [
    ("exit,share\n1,nan\n2,1\n3,1\n", "must be a finite non-negative number"),
    ("exit,share\n1,inf\n", "must be a finite non-negative number"),
    ("exit,share\n1,x\n", "must be an integer and share 'x' a number"),
    ("exit,share\none,1\n", "exit 'one' must be an integer"),
    ("exit,share\n1,0\n", "positive finite sum"),
    ("exit,share\n1\n", "must be an integer and share"),
])
def test_a_bad_distribution_csv_cell_is_named(tmp_path, text, message):
    path = tmp_path / "exits.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        latency.read_distribution_csv(path, 3)


def test_rows_are_finite_and_a_zero_full_latency_divides_nothing():
    with pytest.raises(InputError, match="must be finite"):
        latency.combine(MANIFEST, [1.0, float("inf"), 1.0], [1, 1, 1])
    rows = latency.combine(MANIFEST, [1.0, 2.0, 3.0], [1, 1, 1], full_latency_us=0.0)
    assert "early_exit_over_full" not in [r["row"] for r in rows]


def test_images_files_of_every_kind_are_read_or_refused_in_one_line(tmp_path):
    npy = tmp_path / "images.npy"
    np.save(npy, np.full((4, 28, 28), 255, np.uint8))
    assert latency.images_from_npz(npy, "x_test", (28, 28, 1)).shape == (4, 28, 28, 1)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(InputError, match="allow_pickle=False"):
        latency.images_from_npz(tmp_path / "objects.npy", "x_test", (28, 28, 1))
    np.savez(tmp_path / "good.npz", x_test=np.zeros((64, 28, 28), np.uint8))
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:5000])
    with pytest.raises(InputError, match="not a readable .npz or .npy"):
        latency.images_from_npz(tmp_path / "truncated.npz", "x_test", (28, 28, 1))
    np.savez(tmp_path / "strings.npz", x_test=np.array(["a", "b"]))
    with pytest.raises(InputError, match="numeric"):
        latency.images_from_npz(tmp_path / "strings.npz", "x_test", (28, 28, 1))


# ----------------------------------------------------------------------------- outputs never replace inputs


def test_an_output_never_replaces_an_input_or_an_existing_file(tmp_path, run_dir, cli_error, no_data_load):
    model_file = run_dir / "model.keras"
    other = tmp_path / "other.keras"
    other.write_bytes(b"an earlier import")
    before = _snapshot(tmp_path)
    cases = [
        (evaluate.main, ["--model", str(model_file), "--dataset", "digits", "--out", str(model_file)], "is the input"),
        (evaluate.main, ["--model", str(model_file), "--dataset", "digits", "--out", str(model_file),
                         "--overwrite"], "is the input"),
        (evaluate.main, ["--model", str(model_file), "--dataset", "digits", "--out", str(other)],
         "already exists; pass --overwrite"),
        (evaluate.main, ["--model", str(model_file), "--dataset", "digits", "--out", "/dev/null", "--overwrite"],
         "not a regular file or directory"),
        (prune.main, ["--model", str(model_file), "--dataset", "digits", "--out", str(run_dir),
                      "--target-sparsity", "0.3", "--overwrite"], "holds the input"),
        (prune.main, ["--model", str(other), "--dataset", "digits", "--out", str(run_dir),
                      "--target-sparsity", "0.3"], "already holds model.keras and summary.json"),
        (import_torch.main, ["--checkpoint", str(tmp_path / "c.pth"), "--model", "smallcnn", "--out", str(other)],
         "already exists; pass --overwrite"),
        (import_torch.main, ["--checkpoint", str(other), "--model", "smallcnn", "--out", str(other),
                             "--overwrite"], "is the input"),
        (export.main, ["--tflite", "--model", str(model_file), "--out", str(run_dir), "--overwrite"],
         "holds the input"),
        (export.main, ["--tflite", "--model", str(model_file), "--out", str(tmp_path), "--overwrite"],
         "holds the input"),
    ]
    for main, argv, message in cases:
        assert message in cli_error(main, argv), argv
    assert _snapshot(tmp_path) == before


def test_a_dangling_symlink_out_is_refused_before_any_work(tmp_path, run_dir, cli_error, no_data_load):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "missing" / "target")
    assert "symlink" in cli_error(train.main, [*TRAIN, "--out", str(link)])
    assert "symlink" in cli_error(evaluate.main, ["--model", str(run_dir / "model.keras"), "--dataset", "digits",
                                                  "--out", str(link)])
    assert "dangling symlink" in cli_error(train.main, [*TRAIN, "--out", str(link / "run")])
    assert not (tmp_path / "missing").exists()


def test_publish_replaces_only_regular_files_and_only_when_asked(tmp_path):
    (tmp_path / "summary.json").write_text("kept")
    with pytest.raises(InputError, match="pass --overwrite"):
        files.publish(tmp_path, {"summary.json": files.json_writer({"a": 1})}, replace=False)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        files.publish(tmp_path, {"folder.json": files.json_writer({"a": 1})})
    assert (tmp_path / "summary.json").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.json", "summary.json"]


# ----------------------------------------------------------------------------- divergence


@pytest.fixture(scope="module")
def nan_model_file(tmp_path_factory):
    model = models.build("smallcnn")
    model.exit_policy = ExitPolicy([0.5, 0.5])
    kernel = model.stages[0].trainable_weights[0]
    kernel.assign(np.where(np.arange(kernel.shape[-1]) == 0, np.nan, keras.ops.convert_to_numpy(kernel)))
    path = tmp_path_factory.mktemp("nan") / "model.keras"
    model.save(path)
    return path


def test_a_model_with_one_nan_kernel_is_refused_on_load_and_export(nan_model_file, tmp_path, cli_error,
                                                                   no_data_load):
    with pytest.raises(InputError, match="NaN or infinite weights .*diverged"):
        models.load(nan_model_file)
    for main, argv in ((evaluate.main, ["--model", str(nan_model_file), "--dataset", "digits"]),
                       (prune.main, ["--model", str(nan_model_file), "--dataset", "digits", "--out",
                                     str(tmp_path / "p"), "--target-sparsity", "0.3"]),
                       (export.main, ["--tflite", "--model", str(nan_model_file), "--out", str(tmp_path / "b")])):
        assert "NaN or infinite weights" in cli_error(main, argv)
    model = keras.models.load_model(nan_model_file)
    with pytest.raises(InputError, match="NaN or infinite weights"):
        from rdinet_tf.export import export_tflite

        export_tflite(model, tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_runner_refuses_nan_probabilities_instead_of_answering_class_0(nan_model_file, tmp_path, monkeypatch):
    from rdinet_tf.export import export_tflite, tflite

    monkeypatch.setattr(tflite, "check_finite_weights", lambda *args: None)  # a bundle made before the check
    export_tflite(keras.models.load_model(nan_model_file), tmp_path / "b")
    runner = EarlyExitRunner(tmp_path / "b")
    with pytest.raises(InputError, match="NaN or infinite probabilities"):
        runner.run(np.zeros((28, 28, 1), np.float32))


def test_summaries_are_valid_json_and_zero_exit_weights_are_refused(tmp_path, cli_error):
    files.write_json(tmp_path / "s.json", {"loss": [float("nan"), 1.0], "x": float("inf")})
    assert json.loads((tmp_path / "s.json").read_text()) == {"loss": [None, 1.0], "x": None}
    out = tmp_path / "run"
    assert "exit_weights are all 0" in cli_error(train.main, [*TRAIN, "--exit-weights", "0,0,0", "--out", str(out)])
    assert not out.exists()


def test_a_diverged_training_ends_in_one_error_naming_the_divergence(tmp_path, cli_error):
    out = tmp_path / "run"
    for calibration, guard in (("none", "--no-guard"), ("equal_share", "--guard")):  # the guard has no epoch to keep
        error = cli_error(train.main, [*TRAIN, "--lr", "1e30", "--calibration", calibration, guard, "--out", str(out),
                                       "--restart"])
        assert "training diverged" in error and "--lr" in error and "thresholds" not in error, error
        assert not (out / "model.keras").exists() and not (out / "summary.json").exists()
        assert not (out / "backup" / "latest.weights.h5").exists()  # the diverged epoch is not kept


class _PoisonAt(keras.callbacks.Callback):
    """Puts NaN into the model at the start of epoch ``epoch`` (0-based): into the last exit's bias (the loss
    becomes NaN), or with ``masked`` into one channel of the first kernel (ReLU and max-pooling keep the loss
    finite)."""

    def __init__(self, epoch, masked=False):
        super().__init__()
        self.epoch, self.masked = epoch, masked

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            weight = self.model.trainable_weights[0 if self.masked else -1]
            poisoned = np.arange(weight.shape[-1]) == 0 if self.masked else True
            weight.assign(np.where(poisoned, np.nan, keras.ops.convert_to_numpy(weight)).astype(np.float32))


def test_weights_that_stop_being_finite_under_a_finite_loss_stop_the_run_at_that_epoch(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError, match="epoch 2: the weights hold NaN or infinite values .*--lr"):
        _train(out, "--no-guard", callbacks=[_PoisonAt(1, masked=True)])
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1  # epoch 1 kept


def test_a_training_that_diverges_after_a_guarded_epoch_ends_with_that_epochs_weights(tmp_path, capsys):
    out = tmp_path / "run"
    summary = _train(out, "--guard", callbacks=[_PoisonAt(1)])
    printed = capsys.readouterr().out
    assert "guard: at epoch 2 the loss or the weights are not finite: training diverged" in printed
    assert "weights of epoch 1 restored" in printed
    assert (summary["guard"]["stopped_epoch"], summary["guard"]["restored_epoch"]) == (2, 1)
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "summary.json"]
    saved = json.loads((out / "summary.json").read_text())
    assert len(saved["history"]["loss"]) == 2 and saved["history"]["loss"][1] is None
    models.load(out / "model.keras")  # refused if any weight were not finite


# ----------------------------------------------------------------------------- concurrent runs


def test_a_second_process_on_one_out_is_refused_and_a_killed_holder_does_not_block(tmp_path, run_dir, cli_error):
    out = tmp_path / "run2"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); "
        "time.sleep(60)"), str(tmp_path / ".run2.lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    try:
        error = cli_error(train.main, [*TRAIN, "--out", str(out)])
        assert f"another process (pid {holder.pid}) is writing" in error
        assert "another process" in cli_error(export.main, ["--tflite", "--model", str(run_dir / "model.keras"),
                                                            "--out", str(out)])
    finally:
        holder.kill()
        holder.wait()
    with files.lock(out) as held:  # the kernel released the killed holder's lock
        with pytest.raises(InputError, match=f"pid {os.getpid()}"):
            files.Lock(out).acquire()
        assert held.path.exists()
    assert not (tmp_path / ".run2.lock").exists()


def test_temporaries_of_a_running_process_are_kept(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".summary.{live.pid}-abc.json").write_text("being written")
        (tmp_path / f".b.tmp-{live.pid}-abc").mkdir()
        files.write_json(tmp_path / "summary.json", {})
        with files.staged_directory(tmp_path / "b") as staging:
            (staging / "x").write_text("")
        assert (tmp_path / f".summary.{live.pid}-abc.json").exists() and (tmp_path / f".b.tmp-{live.pid}-abc").exists()
    finally:
        live.kill()
        live.wait()
    files.write_json(tmp_path / "summary.json", {})
    with files.staged_directory(tmp_path / "b", overwrite=True) as staging:
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "summary.json"]


# ----------------------------------------------------------------------------- resume, full disk, SIGTERM


def _train(out, *extra, callbacks=()):
    return train.run(train.parse_args([*RESUME, "--out", str(out), *extra]), callbacks=callbacks)


@pytest.mark.slow
def test_a_half_written_backup_resumes_from_the_intact_previous_copy(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _train(out, callbacks=[StopAfter(1)])
    backup = out / "backup"
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    assert json.loads((backup / "training_metadata.json.bkp").read_text())["epoch"] == 1
    latest = backup / "latest.weights.h5"
    latest.write_bytes(latest.read_bytes()[:200])  # cut while being written
    counter = CountEpochs()
    summary = _train(out, callbacks=[counter])
    assert counter.epochs == [1, 2]  # from the previous copy's epoch, and the input stream skipped as far
    assert len(summary["history"]["loss"]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "summary.json"]


def test_a_backup_without_an_intact_copy_is_named(tmp_path, cli_error):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _train(out, callbacks=[StopAfter(1)])
    for path in (out / "backup").glob("*.weights.h5*"):
        path.write_bytes(path.read_bytes()[:200])
    error = cli_error(train.main, [*RESUME, "--out", str(out)])
    assert "corrupt" in error and "no intact previous copy" in error and "--restart" in error


@pytest.mark.slow
def test_a_full_disk_while_backing_up_ends_in_one_error_and_keeps_the_backup(tmp_path, cli_error, monkeypatch):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _train(out, callbacks=[StopAfter(0)])
    kept = _snapshot(out / "backup")
    save_weights = models.MultiExitModel.save_weights

    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb") as stream:
            stream.write(b"\x89HDF partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models.MultiExitModel, "save_weights", full_disk)
    assert "No space left on device" in cli_error(train.main, [*RESUME, "--out", str(out)])
    assert _snapshot(out / "backup") == {k: v for k, v in _snapshot(out / "backup").items()}
    assert {k: v for k, v in _snapshot(out / "backup").items() if "weights" in str(k)} == \
        {k: v for k, v in kept.items() if "weights" in str(k)}
    assert not [p for p in (out / "backup").iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(models.MultiExitModel, "save_weights", save_weights)
    counter = CountEpochs()
    _train(out, callbacks=[counter])
    assert counter.epochs == [1, 2]


def test_sigterm_during_export_leaves_no_temporaries(tmp_path, run_dir, monkeypatch, capsys):
    import tempfile

    import tensorflow as tf

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the export")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", terminated)
    out = tmp_path / "bundle"
    with pytest.raises(SystemExit) as stop:
        export.main(["--tflite", "--model", str(run_dir / "model.keras"), "--out", str(out)])
    assert stop.value.code == arguments.TERMINATED
    assert capsys.readouterr().err.startswith("error: terminated (SIGTERM)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "scratch"]
    assert list(scratch.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_progress_file_with_a_bad_epoch_key_is_named(tmp_path, cli_error):
    out = tmp_path / "run"
    out.mkdir()
    args = train.parse_args([*RESUME, "--out", str(out)])
    from rdinet_tf.experiments import RunConfig
    from rdinet_tf.experiments.run_directory import training_settings

    training_args = training_settings(RunConfig(**vars(args)))
    (out / "progress.json").write_text(json.dumps({"args": training_args,
                                                   "epochs": {"x": {"logs": {}, "seconds": 1}}}))
    error = cli_error(train.main, [*RESUME, "--out", str(out)])
    assert "progress.json is corrupt" in error and "--restart" in error


# ----------------------------------------------------------------------------- clusters


@pytest.mark.parametrize("tf_config, message", [
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "address a:1 more than once"),
    ('{"cluster": {"chief": ["a:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}',
     "more than once"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "must be a list of"),
    ('{"cluster": {"worker": ["a:1", 5]}, "task": {"type": "worker", "index": 0}}', "must be a list of"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', "cluster of one task"),
    ('{"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "cluster of one task"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": true}}', "task index True"),
])
def test_a_duplicate_or_malformed_cluster_is_refused_before_any_work(tf_config, message, tmp_path, cli_error,
                                                                    monkeypatch, no_data_load):
    with pytest.raises(InputError, match=message):
        placement.check("multi_worker", environ={"TF_CONFIG": tf_config})
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert message in cli_error(train.main, [*TRAIN, "--distribute", "multi_worker", "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- loaders and arguments


def _rewrite_config(source, target, edit):
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for name in original.namelist():
            content = original.read(name)
            copy.writestr(name, edit(content) if name == "config.json" else content)


def test_crafted_model_files_give_one_short_line(tmp_path, run_dir, cli_error, no_data_load):
    good = run_dir / "model.keras"

    def dense_stage(content):
        config = json.loads(content)
        config["config"]["stages"][0] = json.loads(json.dumps(keras.saving.serialize_keras_object(
            keras.layers.Dense(3))))
        return json.dumps(config)

    def unknown_class(content):
        config = json.loads(content)
        config["config"]["stages"][1]["config"]["layers"][1]["class_name"] = "NoSuchLayer"
        return json.dumps(config)

    cases = {"dense_stage": (dense_stage, "cannot be loaded"), "unknown": (unknown_class, "cannot be loaded"),
             "deep": (lambda content: "[" * 200_000 + "]" * 200_000, "cannot be loaded")}
    for name, (edit, message) in cases.items():
        path = tmp_path / f"{name}.keras"
        _rewrite_config(good, path, edit)
        error = cli_error(evaluate.main, ["--model", str(path), "--dataset", "digits"])
        assert message in error and len(error) < 500, (name, error[:1000])


def test_a_model_is_checked_against_the_dataset_classes(tmp_path, cli_error, no_data_load):
    path = tmp_path / "five.keras"
    models.build("smallcnn", num_classes=5).save(path)
    assert "has 5 classes but digits has 10" in cli_error(evaluate.main, ["--model", str(path), "--dataset", "digits"])
    assert "has 5 classes but digits has 10" in cli_error(prune.main, [
        "--model", str(path), "--dataset", "digits", "--out", str(tmp_path / "p"), "--target-sparsity", "0.3"])


@pytest.mark.parametrize("seed", ["-1", "99999999999", "1.5"])
def test_seeds_are_checked_by_the_parser(seed, tmp_path, cli_error):
    assert "argument --seed" in cli_error(train.main, [*TRAIN, "--seed", seed, "--out", str(tmp_path / "r")])
    assert "argument --seed" in cli_error(prune.main, ["--model", "m.keras", "--out", str(tmp_path / "p"),
                                                       "--target-sparsity", "0.3", "--seed", seed])


def _npy(shape, dtype="|u1", payload=b"\0" * 64):
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": dtype, "fortran_order": False, "shape": shape})
    return stream.getvalue() + payload


def test_dataset_headers_claiming_more_than_the_file_holds_are_refused(tmp_path):
    small = np.zeros((2, 28, 28), np.uint8)
    with zipfile.ZipFile(tmp_path / "mnist.npz", "w") as archive:
        archive.writestr("x_train.npy", _npy((2**40, 28, 28)))
        for key, value in (("y_train", np.arange(2)), ("x_test", small), ("y_test", np.arange(2))):
            stream = io.BytesIO()
            np.save(stream, value)
            archive.writestr(f"{key}.npy", stream.getvalue())
    with pytest.raises(data.DataError, match="claims shape"):
        data.load("mnist", data_dir=tmp_path)
    idx = tmp_path / "idx"
    idx.mkdir()
    header = {2051: np.array([2051, -5, 28, 28], ">i4"), 2049: np.array([2049, 2], ">i4")}
    for base_name, magic in data._IDX_FILES.values():
        kind = "idx1" if magic == 2049 else "idx3"
        (idx / f"{base_name}-{kind}-ubyte").write_bytes(header[magic].tobytes() + b"\0" * 4)
    with pytest.raises(data.DataError, match="negative shape"):
        data.load("mnist", data_dir=idx)


def test_the_importer_reads_bf16_and_sparse_and_refuses_complex_and_int_keys(tmp_path):
    torch = pytest.importorskip("torch")
    from rdinet_tf.models.torch_reference import REFERENCE_MODELS

    from rdinet_tf.models.torch_checkpoint import load_torch_checkpoint

    state = REFERENCE_MODELS["smallcnn"]().state_dict()
    floats = {k: v for k, v in state.items()}
    cases = {
        "bf16": ({k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in floats.items()}, None),
        "sparse": ({k: (v.to_sparse() if k == "fc3.weight" else v) for k, v in floats.items()}, None),
        "complex": ({k: (v.to(torch.complex64) if k == "fc3.weight" else v) for k, v in floats.items()},
                    "complex64: a weight is real"),
        "int_key": ({**floats, 7: torch.zeros(1)}, "keyed by parameter names"),
    }
    for name, (checkpoint, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(checkpoint, path)
        if message is None:
            model = load_torch_checkpoint(path, "smallcnn")
            expected = checkpoint["fc3.weight"].to_dense().float().numpy()
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.heads[-1].layers[-1].kernel).T, expected)
        else:
            with pytest.raises(InputError, match=message):
                load_torch_checkpoint(path, "smallcnn")


def test_unexpected_errors_are_one_line_unless_the_traceback_is_asked_for(capsys, monkeypatch):
    def broken(args):
        raise KeyError("x" * 5000)

    with pytest.raises(SystemExit) as stop:
        arguments.guarded(broken, None)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and len(err) <= arguments.MAX_MESSAGE + 10
    assert "unexpected KeyError" in err and arguments.TRACEBACK_ENV in err
    monkeypatch.setenv(arguments.TRACEBACK_ENV, "1")
    with pytest.raises(KeyError):
        arguments.guarded(broken, None)


# ----------------------------------------------------------------------------- found by trying more bad inputs


def test_more_bad_inputs_each_give_one_line(tmp_path, run_dir, cli_error, no_data_load, monkeypatch):
    model_file = str(run_dir / "model.keras")
    os.mkfifo(tmp_path / "fifo")
    deep = _fake_bundle(tmp_path / "deep")
    (deep / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    cases = [
        (train.main, [*TRAIN, "--out", ""], "--out is empty"),
        (prune.main, ["--model", model_file, "--out", "", "--target-sparsity", "0.3"], "--out is empty"),
        (export.main, ["--tflite", "--model", model_file, "--out", ""], "--out is empty"),
        (evaluate.main, ["--model", model_file, "--dataset", "digits", "--out", str(tmp_path / "fifo")],
         "not a regular file or directory"),
        (bench.main, ["--bundle", str(_fake_bundle(tmp_path / "b")), "--logs", model_file, "--out",
                      str(tmp_path / "l.csv")], "is not a directory"),
        (bench.main, ["--bundle", str(deep), "--plan"], "nested too deeply"),
    ]
    for main, argv, message in cases:
        assert message in cli_error(main, argv), argv
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["hostonly", "b:2"]}, "task": {"type": "worker", '
                                    '"index": 0}}')
    assert 'must be a list of "host:port" strings' in cli_error(train.main, [*TRAIN, "--distribute", "multi_worker",
                                                                           "--out", str(tmp_path / "r")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "deep", "fifo", "run"]


def test_a_pickled_payload_is_refused_in_one_line_without_running(tmp_path, cli_error):
    pytest.importorskip("torch")
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    with open(tmp_path / "evil.pth", "wb") as stream:
        __import__("pickle").dump({"state_dict": Payload()}, stream)
    error = cli_error(import_torch.main, ["--checkpoint", str(tmp_path / "evil.pth"), "--model", "smallcnn",
                                          "--out", str(tmp_path / "m.keras")])
    assert "is not a state dict of tensors" in error and "never runs code" in error
    assert not marker.exists() and not (tmp_path / "m.keras").exists()
