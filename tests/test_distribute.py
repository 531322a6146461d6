"""Training under tf.distribute from the command line: mirrored replicas and two workers on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rdinet_tf.training import placement
from rdinet_tf.cli import train
from rdinet_lite.errors import InputError

HARNESS = Path(__file__).with_name("train_harness.py")
TRAIN = ["--model", "smallcnn", "--dataset", "digits", "--fast", "--batch-size", "32", "--eval-attack-steps", "1",
         "--eval-samples", "20", "--eval-objectives", "exit_1", "--quiet"]
TIMEOUT = 420  # seconds for any one training process


def _train(tmp_path, name, extra, env=None):
    """Start the harness on ``TRAIN + extra`` with ``--out tmp_path/name``; returns the process."""
    argv = [sys.executable, str(HARNESS), str(tmp_path / f"{name}.npz"), *TRAIN, *extra,
            "--out", str(tmp_path / name)]
    return subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(*processes):
    """Wait for every process (bounded), end any that is left, and fail with the stderr of one that failed."""
    try:
        outputs = [process.communicate(timeout=TIMEOUT) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]


def _weights(tmp_path, name):
    with np.load(tmp_path / f"{name}.npz") as dump:
        return [dump[key] for key in sorted((k for k in dump.files if k.startswith("weight_")),
                                            key=lambda k: int(k.split("_")[1]))]


def _assert_same_weights(left, right, atol):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_one_mirrored_step_on_two_cpus_equals_one_device_on_the_same_global_batch(tmp_path):
    one_step = ["--epochs", "1", "--steps-per-epoch", "1"]
    _finish(_train(tmp_path, "mirrored", [*one_step, "--distribute", "mirrored", "--cpu-devices", "2"]))
    _finish(_train(tmp_path, "single", one_step))
    mirrored = json.loads((tmp_path / "mirrored" / "summary.json").read_text())
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert mirrored["placement"] == {"strategy": "mirrored", "replicas": 2, "workers": 1, "worker": 0,
                                        "is_chief": True, "global_batch": 32, "per_replica_batch": 16}
    assert mirrored["history"]["loss"][0] == pytest.approx(single["history"]["loss"][0], abs=1e-5)
    _assert_same_weights(_weights(tmp_path, "mirrored"), _weights(tmp_path, "single"), atol=1e-5)


@pytest.mark.slow
def test_two_workers_train_like_one_process_and_only_the_chief_writes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    steps = ["--epochs", "2", "--steps-per-epoch", "2", "--distribute", "multi_worker"]
    workers = [_train(tmp_path, f"worker_{i}", steps,
                      {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    _finish(*workers)
    _finish(_train(tmp_path, "single", steps[:4]))
    _assert_same_weights(_weights(tmp_path, "worker_0"), _weights(tmp_path, "worker_1"), atol=0)
    _assert_same_weights(_weights(tmp_path, "worker_0"), _weights(tmp_path, "single"), atol=1e-5)
    chief = tmp_path / "worker_0"
    assert sorted(p.name for p in chief.iterdir()) == ["model.keras", "summary.json"]
    summary = json.loads((chief / "summary.json").read_text())
    assert summary["placement"] == {"strategy": "multi_worker", "replicas": 2, "workers": 2, "worker": 0,
                                       "is_chief": True, "global_batch": 32, "per_replica_batch": 16}
    assert len(summary["history"]["loss"]) == 2
    assert not (tmp_path / "worker_1").exists()


@pytest.mark.slow
def test_an_interrupted_two_worker_run_resumes_on_both_workers(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    steps = ["--epochs", "3", "--steps-per-epoch", "2", "--distribute", "multi_worker"]

    def workers(extra_env, prefix="worker"):
        return [_train(tmp_path, f"{prefix}_{i}", steps, {
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}), **extra_env})
            for i in range(2)]

    killed = workers({"HARNESS_KILL_AFTER_EPOCH": "0"})
    for process in killed:
        process.communicate(timeout=TIMEOUT)
        assert process.returncode == 17
    chief, other = tmp_path / "worker_0", tmp_path / "worker_1"
    first_epoch = json.loads((chief / "progress.json").read_text())["epochs"]
    assert sorted(first_epoch) == ["0"] and (other / ".worker_1" / "progress.json").is_file()
    _finish(*workers({}))
    summary = json.loads((chief / "summary.json").read_text())
    assert summary["history"]["loss"][0] == first_epoch["0"]["logs"]["loss"]  # kept, not trained again
    assert len(summary["history"]["loss"]) == 3
    assert sorted(p.name for p in chief.iterdir()) == ["model.keras", "summary.json"]
    assert not other.exists()
    _finish(*workers({}, prefix="whole"))  # the same run, never interrupted: the same weights and optimizer state
    with np.load(tmp_path / "worker_0.npz") as resumed, np.load(tmp_path / "whole_0.npz") as whole:
        assert sorted(resumed.files) == sorted(whole.files)
        assert any(key.startswith("optimizer_") for key in whole.files)
        for key in whole.files:
            np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)


@pytest.mark.parametrize("argv, message", [
    (["--cpu-devices", "2"], "give it with --distribute mirrored"),
    (["--distribute", "multi_worker"], "needs the TF_CONFIG environment variable"),
    (["--distribute", "tpu"], "argument --distribute: invalid choice"),
    (["--precision", "float8"], "argument --precision: invalid choice"),
])
def test_bad_placement_requests_are_refused_before_any_work(argv, message, tmp_path, cli_error, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = tmp_path / "run"
    assert message in cli_error(train.main, [*TRAIN, *argv, "--out", str(out)])
    assert not out.exists()


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "TF_CONFIG is malformed"),
    ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG is malformed (KeyError"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "task index 2"),
    ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "only 'chief' and 'worker'"),
])
def test_a_malformed_tf_config_is_one_clear_error(tf_config, message):
    with pytest.raises(InputError, match=message.replace("(", "\\(")):
        placement.check("multi_worker", environ={"TF_CONFIG": tf_config})


def test_the_global_batch_must_split_evenly_over_the_replicas():
    placed = placement.Placement("mirrored", None, replicas=4)
    assert placed.per_replica_batch(128) == 32
    for bad in (2, 130):
        with pytest.raises(InputError, match=f"--batch-size {bad} .* multiple of the 4 replicas"):
            placed.per_replica_batch(bad)
