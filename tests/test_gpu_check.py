"""The GPU check's code path, run for a few steps on the CPU (``--cpu-smoke``)."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_runs_every_row_on_the_cpu(tmp_path):
    # a CIFAR-shaped stand-in dataset: the smoke run needs only a few hundred images
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar10.npz", x_train=images, y_train=rng.integers(0, 10, 512),
             x_test=images[:256], y_test=rng.integers(0, 10, 256))
    result = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^\| (\w+) \| (\d+) \| ([\w +]+) \| ([\d.]+) \|$", result.stdout, re.MULTILINE)
    assert {(model, mode) for model, _, mode, _ in rows} == {
        ("resnet8", mode) for mode in ("float32", "mixed_bfloat16", "float32 + XLA")}
    assert all(float(rate) > 0 for *_, rate in rows)
    assert re.search(r"resnet8, 4 steps of batch 8 .*TA \(last exit\) [\d.]+% on 256 test images", result.stdout)
