"""A training run directory survives a kill at any point: reruns resume, finished runs are kept."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from epoch_callbacks import CountEpochs, StopAfter

from rdinet_tf import evaluation
from rdinet_tf.cli import train

ARGS = ["--model", "smallcnn", "--dataset", "digits", "--defense", "main", "--fast", "--epochs", "3",
        "--steps-per-epoch", "2", "--batch-size", "32", "--eval-attack-steps", "1", "--eval-samples", "16",
        "--eval-objectives", "exit_3", "--quiet"]


def _run(out, *extra, callbacks=()):
    return train.run(train.parse_args([*ARGS, "--out", str(out), *extra]), callbacks=callbacks)


def test_a_rerun_resumes_an_interrupted_fit_and_the_summary_covers_every_epoch(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(out, callbacks=[StopAfter(0)])
    assert not (out / "model.keras").exists() and (out / "backup").is_dir()
    progress = json.loads((out / "progress.json").read_text())
    assert list(progress["epochs"]) == ["0"]
    del progress["args"]["neo_kd"]  # as written before that option existed: it resumes at the default
    (out / "progress.json").write_text(json.dumps(progress))
    counter = CountEpochs()
    summary = _run(out, callbacks=[counter])
    assert counter.epochs == [1, 2]  # epoch 0 was not repeated
    assert len(summary["history"]["loss"]) == 3 and summary["train_seconds"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["history"] == summary["history"]


def test_a_rerun_after_fit_finished_does_not_train_again(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "evaluate_splits", killed)
        with pytest.raises(KeyboardInterrupt):
            _run(out)
    assert (out / "trained.keras").is_file() and not (out / "model.keras").exists()
    counter = CountEpochs()
    summary = _run(out, callbacks=[counter])
    assert counter.epochs == [] and len(summary["history"]["loss"]) == 3
    assert summary["report"]["num_samples"] == 16


def test_a_finished_run_is_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    _run(out, "--epochs", "1")
    before = (out / "summary.json").read_text()
    with pytest.raises(SystemExit) as stop:
        train.main([*ARGS, "--epochs", "1", "--out", str(out)])
    assert stop.value.code == 2 and "already holds a finished run" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    _run(out, "--epochs", "1", "--overwrite", "--seed", "1")
    assert json.loads((out / "summary.json").read_text())["args"]["seed"] == 1


def test_a_corrupt_backup_and_changed_arguments_are_named_with_the_fix(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(out, callbacks=[StopAfter(0)])
    with pytest.raises(SystemExit):
        train.main([*ARGS, "--out", str(out), "--lr", "0.5"])
    assert "other arguments (lr)" in capsys.readouterr().err
    for weights in (out / "backup").glob("*.weights.h5"):
        weights.write_bytes(weights.read_bytes()[:100])  # truncated, as by a full disk
    with pytest.raises(SystemExit):
        train.main([*ARGS, "--out", str(out)])
    message = capsys.readouterr().err
    assert "is corrupt" in message and "--restart" in message
    counter = CountEpochs()
    summary = _run(out, "--restart", callbacks=[counter])
    assert counter.epochs == [0, 1, 2] and len(summary["history"]["loss"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("stage, ready", [("during an epoch", "progress.json"), ("after fit", "trained.keras")])
def test_a_killed_training_process_resumes(tmp_path, stage, ready):
    out = tmp_path / "run"
    epochs = 20 if stage == "during an epoch" else 2
    command = [sys.executable, "-m", "rdinet_tf.train", *ARGS, "--out", str(out)]
    command[command.index("--epochs") + 1] = str(epochs)
    if stage == "after fit":  # a long evaluation, to be killed in
        command[command.index("--eval-samples") + 1] = "360"
        command[command.index("--eval-attack-steps") + 1] = "40"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / ready).exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert (out / ready).exists() and not (out / "summary.json").exists()
    done = json.loads((out / "progress.json").read_text())["epochs"]
    assert len(done) < epochs or stage == "after fit"
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["history"]["loss"]) == epochs
    assert summary["history"]["loss"][: len(done)] == [done[str(e)]["logs"]["loss"] for e in range(len(done))]
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "summary.json"]
