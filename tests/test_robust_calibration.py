"""benchmarks/robust_calibration.py end to end on the digits model, with an MNIST-shaped stand-in dataset."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "robust_calibration.py"


def _uint8(images):
    return np.round(images[..., 0] * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def stand_in(digits_model, digits, tmp_path_factory):
    """A directory with the digits as ``mnist.npz`` and the digits model as ``model.keras``."""
    root = tmp_path_factory.mktemp("robust_calibration")
    np.savez(root / "mnist.npz", x_train=_uint8(np.concatenate([digits.x_train, digits.x_val])),
             y_train=np.concatenate([digits.y_train, digits.y_val]), x_test=_uint8(digits.x_test),
             y_test=digits.y_test)
    digits_model.save(root / "model.keras")
    return root


def _run(*argv):
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_robust_calibration_scores_each_policy_and_empties_its_attack_cache(stand_in):
    cache = stand_in / "cache"
    result = _run("--model", str(stand_in / "model.keras"), "--dataset", "mnist", "--data-dir", str(stand_in),
                  "--calibration-samples", "60", "--calibration-attack-steps", "1", "--test-samples", "20",
                  "--attack-cache", str(cache))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^\| ([\w ,]+) \| \[[-\d., ]+\] \| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+) \|",
                      result.stdout, re.MULTILINE)
    labels = [label for label, *_ in rows]
    assert labels[:2] == ["equal_share", "target_cost"] and "robust" in labels, result.stdout
    for _, accuracy, worst, per_sample, _ in rows:
        assert float(per_sample) <= float(worst) <= float(accuracy) <= 100
    assert "test: first 20 test images, PGD-40" in result.stdout
    assert not cache.exists()


def test_robust_calibration_refuses_a_model_for_the_other_dataset_in_one_line(stand_in):
    result = _run("--model", str(stand_in / "model.keras"), "--dataset", "cifar10", "--data-dir", str(stand_in))
    assert result.returncode == 2 and result.stdout == ""
    last = result.stderr.splitlines()[-1]  # after TensorFlow's start-up log
    assert last.startswith("error: ") and last.endswith("pick a matching --dataset"), result.stderr[-2000:]
