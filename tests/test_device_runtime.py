"""The device side runs with numpy and ai-edge-litert alone: no TensorFlow, no Keras.

A "board" is simulated exactly as device/README.md section 3 tells a real one to be set up:

1. a fresh venv (``python -m venv``) with only what device/README.md's ``pip install`` line names
   (pip's cache and configuration as usual); skipped only when a separate probe finds no index
   reachable at all: a requirement the index cannot satisfy fails;
2. the checkout's folders that the README's ``scp -r`` line names (``rdinet_lite/``) copied into
   a board directory, the working directory of every command; no ``PYTHONPATH`` and no
   pip install of the project;
3. a bundle exported here, in the main environment, from a fresh
   ``rdinet_tf.models.build("smallcnn")`` with thresholds that split the test images
   over the exits, plus ``test_images.npz`` (uint8, key ``x_test``).

In the venv, ``import tensorflow`` and ``import keras`` fail, ``EarlyExitRunner`` gives
the same exits, predictions and probabilities as the main environment's runner, and
``python -m rdinet_lite.edge`` and ``python -m rdinet_lite`` (rdinet-bench) run. About 15 s on a 2-core machine
(venv and pip install about 6 s, with or without pip's cache).
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PIP_TIMEOUT_S = 300  # the whole install; each connection attempt also times out (--timeout)
PROBE_TIMEOUT_S = 120
RUN_TIMEOUT_S = 120
NUM_IMAGES = 16


def device_requirements():
    """What device/README.md tells a board to install: the packages of its ``pip install`` line."""
    text = (REPO / "device" / "README.md").read_text()
    match = re.search(r"-m pip install ([^'`\n]+)", text)
    assert match, "device/README.md should give the board's pip install line"
    return match.group(1).split()


def device_folders():
    """The checkout's folders device/README.md tells the host to copy to a board: those its ``scp -r`` line names."""
    text = (REPO / "device" / "README.md").read_text()
    match = re.search(r"^scp -r (.+) board:", text, re.MULTILINE)
    assert match, "device/README.md should give the scp line that copies the device package to a board"
    return [name for name in match.group(1).split() if (REPO / name).is_dir()]


DEVICE_REQUIREMENTS = device_requirements()
DEVICE_FOLDERS = device_folders()


def index_reachable(python, env, cwd):
    """Whether pip reaches a package index at all: it can list the versions of numpy there."""
    try:
        probe = _run([str(python), "-m", "pip", "index", "versions", "numpy", "--timeout", "30", "--retries", "1"],
                     env, cwd, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0 and "numpy" in probe.stdout


def _board_environment():
    """The venv's environment: nothing of the main interpreter's paths (commands run in the board directory)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(command, env, cwd, timeout=RUN_TIMEOUT_S):
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _checked(result):
    assert result.returncode == 0, (f"{result.args!r} failed ({result.returncode}):\n"
                                    f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """(venv python, board directory, environment) of a venv holding only numpy and ai-edge-litert."""
    root = tmp_path_factory.mktemp("device")
    venv, board_dir = root / "venv", root / "board"
    _checked(subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S))
    python = venv / "bin" / "python"
    env = _board_environment()
    command = [str(python), "-m", "pip", "install", "--timeout", "30", "--retries", "2", *DEVICE_REQUIREMENTS]
    try:
        install = _run(command, env, root, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        install = None
    if install is None or install.returncode != 0:
        # Skipped only when no index answers at all; a requirement the index cannot satisfy (a pin that
        # does not exist, a wheel missing for this platform) is a failure of what the README tells a board.
        if not index_reachable(python, env, root):
            pytest.skip(f"pip cannot reach a package index (pip index versions numpy failed); "
                        f"not installing {' '.join(DEVICE_REQUIREMENTS)}")
        assert install is not None, f"pip install {' '.join(DEVICE_REQUIREMENTS)} took over {PIP_TIMEOUT_S} s"
        _checked(install)
    # The package as a board gets it: the folders of the README's scp line (device/README.md, section 3).
    for folder in DEVICE_FOLDERS:
        shutil.copytree(REPO / folder, board_dir / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return python, board_dir, env


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(bundle dir, test_images.npz, the main environment's BatchResult on those images)."""
    import keras

    from rdinet_tf import models
    from rdinet_lite.latency import images_from_npz
    from rdinet_tf.export import export_tflite
    from rdinet_tf.exits.policy import ExitPolicy, exit_entropies, predict_exit_logits
    from rdinet_lite.runner import EarlyExitRunner

    root = tmp_path_factory.mktemp("host")
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    pixels = np.random.default_rng(0).integers(0, 256, (NUM_IMAGES, 28, 28), dtype=np.uint8)
    images_path = root / "test_images.npz"
    np.savez(images_path, x_test=pixels)
    images = images_from_npz(images_path, "x_test", (28, 28, 1))
    # Fixed thresholds between the side exits' entropies, so the images spread over the exits
    # (random weights: every entropy is close to log 10).
    entropies = np.asarray(exit_entropies(predict_exit_logits(model, images)))
    model.exit_policy = ExitPolicy([float(np.quantile(entropies[:, 0], 0.3)),
                                    float(np.quantile(entropies[:, 1], 0.6))])
    bundle_dir = root / "bundle_smallcnn"
    export_tflite(model, bundle_dir, representative_images=images, include_full=True)
    expected = EarlyExitRunner(bundle_dir, num_threads=1).run_batch(images)
    assert len(set(expected.exits.tolist())) > 1, f"the images should take several exits: {expected.exits}"
    return bundle_dir, images_path, expected


def test_readme_pins_the_runtime_the_library_is_tested_with():
    """The board installs the LiteRT the main environment pins (pyproject.toml) and the tests run with."""
    from importlib.metadata import version

    pins = [r for r in DEVICE_REQUIREMENTS if r.startswith("ai-edge-litert")]
    setup_pin = re.search(r'"(ai-edge-litert==[^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert pins == [setup_pin] == [f"ai-edge-litert=={version('ai-edge-litert')}"]


def test_the_board_gets_the_device_package_alone():
    """The README copies rdinet_lite/ and nothing of rdinet_tf (which needs TensorFlow)."""
    assert DEVICE_FOLDERS == ["rdinet_lite"]


def test_venv_has_no_tensorflow_or_keras(board):
    python, board_dir, env = board
    for module in ("tensorflow", "keras"):
        result = _run([str(python), "-c", f"import {module}"], env, board_dir)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, \
            f"the device venv should not have {module}:\n{result.stdout}{result.stderr}"


RUNNER_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from rdinet_lite import EarlyExitRunner
    from rdinet_lite.latency import images_from_npz
    bundle, images_path, out = sys.argv[1:]
    runner = EarlyExitRunner(bundle, num_threads=1)
    result = runner.run_batch(images_from_npz(images_path, "x_test", runner.image_shape))
    np.savez(out, exits=result.exits, predictions=result.predictions, probabilities=result.probabilities)
    print(json.dumps({"loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")),
                      "rdinet_lite": sys.modules["rdinet_lite"].__file__}))
""")


def test_runner_in_venv_matches_main_environment(board, bundle, tmp_path):
    python, board_dir, env = board
    bundle_dir, images_path, expected = bundle
    out = tmp_path / "device_result.npz"
    result = _checked(_run([str(python), "-c", RUNNER_SCRIPT, str(bundle_dir), str(images_path), str(out)],
                           env, board_dir))
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], f"the runtime imported {report['loaded']}"
    assert Path(report["rdinet_lite"]).resolve().is_relative_to(board_dir.resolve()), report  # the board copy
    with np.load(out) as device:
        np.testing.assert_array_equal(device["exits"], expected.exits)
        np.testing.assert_array_equal(device["predictions"], expected.predictions)
        np.testing.assert_allclose(device["probabilities"], expected.probabilities, rtol=0, atol=1e-6)


def test_edge_in_venv(board, bundle, tmp_path):
    python, board_dir, env = board
    bundle_dir, images_path, expected = bundle
    csv_path = tmp_path / "edge_latency.csv"
    result = _checked(_run([str(python), "-m", "rdinet_lite.edge", "--bundle", str(bundle_dir),
                            "--images", str(images_path), "--key", "x_test", "--count", str(NUM_IMAGES),
                            "--warmup", "2", "--threads", "1", "--out", str(csv_path)], env, board_dir))
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    shares = np.bincount(expected.exits, minlength=3) / NUM_IMAGES
    assert list(summary["exit_shares"]) == ["exit_1", "exit_2", "exit_3"]  # numbered as in the manifest
    assert list(summary["segment_us"]) == ["segment_1", "segment_2", "segment_3"]
    np.testing.assert_allclose(list(summary["exit_shares"].values()), shares)
    printed = next(line for line in result.stdout.splitlines() if line.startswith("exit shares"))
    assert printed.split()[2:8] == ["exit", "1:", f"{shares[0]:.3f}", "exit", "2:", f"{shares[1]:.3f}"]
    assert summary["images"] == NUM_IMAGES and summary["full_ms"] is not None
    rows = [line.split(",")[0] for line in csv_path.read_text().splitlines()]
    assert rows == ["row", "segment_1", "segment_2", "segment_3", "early_exit_expected", "full_model",
                    "early_exit_over_full"]

    for wrong in (["--bundle", str(tmp_path / "missing")],
                  ["--bundle", str(bundle_dir), "--images", str(images_path), "--key", "x_train"]):
        error = _run([str(python), "-m", "rdinet_lite.edge", *wrong, "--out", str(tmp_path / "no.csv")],
                     env, board_dir)
        # LiteRT's C++ side may log "INFO: Created TensorFlow Lite XNNPACK delegate" first; the script's
        # own output is one last line "error: ...", with no traceback.
        lines = error.stderr.splitlines()
        assert error.returncode == 2 and lines and lines[-1].startswith("error: "), error.stderr
        assert "Traceback" not in error.stderr and sum(line.startswith("error: ") for line in lines) == 1, \
            error.stderr


def test_combine_in_venv(board, bundle, tmp_path):
    """python -m rdinet_lite (rdinet-bench) on benchmark_model-style logs, in the TF-free venv."""
    python, board_dir, env = board
    bundle_dir, _, _ = bundle
    logs = tmp_path / "logs"
    logs.mkdir()
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    signatures = [s["signature"] for s in manifest["segments"]] + [manifest["full_model"]["signature"]]
    for index, signature in enumerate(signatures):
        (logs / f"{signature}.log").write_text(f"Inference timings in us: Init: 1, First inference: 2, "
                                               f"Warmup (avg): 3, Inference (avg): {100 * (index + 1)}\n")
    out = tmp_path / "latency.csv"
    _checked(_run([str(python), "-m", "rdinet_lite", "--bundle", str(bundle_dir), "--logs", str(logs),
                   "--out", str(out)], env, board_dir))
    with open(out, newline="") as handle:
        rows = {row["row"]: row for row in csv.DictReader(handle)}
    # segment k's log says 100 k us; the expected latency is sum_k share_k * (100 + ... + 100 k)
    shares = np.asarray(manifest["exit_distribution"]["shares"], np.float64)
    cumulative = np.cumsum([100.0, 200.0, 300.0])
    assert list(rows) == ["segment_1", "segment_2", "segment_3", "early_exit_expected", "full_model",
                          "early_exit_over_full"]
    for k in range(3):
        assert float(rows[f"segment_{k + 1}"]["latency_us"]) == 100.0 * (k + 1)
        assert float(rows[f"segment_{k + 1}"]["cumulative_latency_us"]) == cumulative[k]
    expected = float(shares @ cumulative) / shares.sum()
    assert float(rows["early_exit_expected"]["latency_us"]) == pytest.approx(expected, rel=1e-9)
    assert float(rows["full_model"]["latency_us"]) == 400.0
    assert float(rows["early_exit_over_full"]["latency_us"]) == pytest.approx(expected / 400.0, rel=1e-9)
