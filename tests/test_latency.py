"""rdinet_lite.latency and rdinet-bench: parsing LiteRT benchmark_model logs and combining segment latencies into
early-exit latency."""

import csv
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rdinet_lite import bench, latency
from rdinet_lite.errors import InputError
from rdinet_lite.manifest import Manifest

# benchmark_model on a phone (recent LiteRT: warm-up line, then the measured run with percentiles).
ANDROID_LOG = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/rdinet/segment_2.tflite]
INFO: Signature to run: []
INFO: #threads used for CPU inference: [1]
INFO: Loaded model /data/local/tmp/rdinet/segment_2.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: XNNPACK delegate created.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 1.56418
INFO: Initialized session in 3.412ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=2209 first=1006 curr=210 min=197 max=1006 avg=225.5 std=29 p5=199 median=219 p95=262

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=4512 first=221 curr=214 min=196 max=655 avg=218.75 std=17 p5=200 median=215 p95=245

INFO: Inference timings in us: Init: 3412, First inference: 1006, Warmup (avg): 225.5, Inference (avg): 218.75
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=3.34375 overall=10.0469
"""

# An older build through logcat-style prefixes, scientific notation and no summary percentiles.
OLD_LOG = """\
I tflite  : Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
I tflite  : count=1 curr=3512391

I tflite  : Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
I tflite  : count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798
"""

def manifest_json(**changes):
    """The JSON of a 3-exit bundle's manifest with the costs these tests use (placeholder tensors and file)."""
    segments = [{"index": k - 1, "exit": f"exit_{k}", "signature": f"segment_{k}", "inputs": {}, "outputs": {},
                 "cost_mflops": {"honest": {"segment": segment, "cumulative": cumulative}}}
                for k, segment, cumulative in ((1, 1.0, 1.0), (2, 3.0, 4.0), (3, 1.0, 5.0))]
    manifest = {"format": Manifest.FORMAT, "format_version": Manifest.FORMAT_VERSION, "file": "model.tflite",
                "sha256": hashlib.sha256(b"flatbuffer").hexdigest(), "num_exits": 3, "thresholds": [0.1, 0.2],
                "input": {"shape": [1, 28, 28, 1]}, "segments": segments,
                "full_model": {"signature": "full", "inputs": {}, "outputs": {}, "cost_mflops": {"honest": 4.5}},
                "exit_distribution": {"shares": [0.5, 0.25, 0.25]}}
    manifest.update(changes)
    return manifest


MANIFEST = Manifest.from_json(manifest_json())


def test_parse_summary_line_and_measured_run():
    timing = latency.parse_benchmark_model(ANDROID_LOG)
    assert timing.avg_us == 218.75
    assert (timing.runs, timing.std_us, timing.median_us, timing.p95_us) == (4512, 17, 215, 245)


def test_parse_falls_back_to_the_last_count_line():
    timing = latency.parse_benchmark_model(OLD_LOG)
    assert timing.avg_us == pytest.approx(2.95034e6)
    assert timing.runs == 50 and timing.median_us is None


def test_parse_refuses_a_failed_run():
    with pytest.raises(InputError, match="benchmark_model"):
        latency.parse_benchmark_model("ERROR: Could not open 'segment_1.tflite'.\n")


def test_expected_latency_pays_segments_up_to_the_exit():
    # exit 1: 100; exit 2: 100 + 200; exit 3: 100 + 200 + 50
    assert latency.expected_latency([100, 200, 50], [2, 1, 1]) == pytest.approx(
        (2 * 100 + 300 + 350) / 4)
    with pytest.raises(InputError, match=r"needs 2 non-negative counts or shares \(one per exit\).*\[1.0, 1.0, 1.0\]"):
        latency.expected_latency([100, 200], [1, 1, 1])
    with pytest.raises(InputError, match="non-negative"):
        latency.expected_latency([100, 200], [0, 0])
    with pytest.raises(InputError, match="one non-negative latency per segment"):
        latency.expected_latency([100, -200], [1, 1])


def test_combine_rows_and_ratios():
    rows = {r["row"]: r for r in latency.combine(MANIFEST, [100.0, 200.0, 50.0], [0.5, 0.25, 0.25],
                                                   full_latency_us=300.0)}
    assert rows["segment_3"]["cumulative_latency_us"] == 350
    assert rows["early_exit_expected"]["latency_us"] == pytest.approx(0.5 * 100 + 0.25 * 300 + 0.25 * 350)
    assert rows["early_exit_expected"]["mflops_honest"] == pytest.approx(0.5 * 1 + 0.25 * 4 + 0.25 * 5)
    assert rows["early_exit_over_full"]["latency_us"] == pytest.approx(212.5 / 300)
    assert rows["early_exit_over_full"]["mflops_honest"] == pytest.approx(2.75 / 4.5)


def test_distribution_csv_and_manifest(tmp_path):
    path = tmp_path / "exits.csv"
    path.write_text("exit,count\n1,30\n3,10\n2,60\n")
    np.testing.assert_allclose(latency.read_distribution_csv(path, 3), [0.3, 0.6, 0.1])
    path.write_text("exit,share\n4,1\n")
    with pytest.raises(InputError, match="out of range"):
        latency.read_distribution_csv(path, 3)
    assert latency.manifest_distribution(MANIFEST).tolist() == [0.5, 0.25, 0.25]
    with pytest.raises(InputError, match="--distribution"):
        latency.manifest_distribution(Manifest.from_json(manifest_json(exit_distribution=None)))


def test_images_from_npz(tmp_path):
    path = tmp_path / "images.npz"
    np.savez(path, x_test=np.full((5, 28, 28), 255, np.uint8))
    images = latency.images_from_npz(path, "x_test", (28, 28, 1), count=3)
    assert images.shape == (3, 28, 28, 1) and images.dtype == np.float32 and images.max() == 1
    with pytest.raises(InputError, match="expects"):
        latency.images_from_npz(path, "x_test", (32, 32, 3))
    with pytest.raises(InputError, match="no array"):
        latency.images_from_npz(path, "x_train", (28, 28, 1))
    with pytest.raises(InputError, match="holds 5 images; 6 were asked for"):  # never silently fewer
        latency.images_from_npz(path, "x_test", (28, 28, 1), count=6)


@pytest.fixture
def bundle(tmp_path):
    """A bundle directory with MANIFEST as its manifest and a placeholder model file."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(b"flatbuffer")
    (bundle / "manifest.json").write_text(json.dumps(manifest_json()))
    return bundle


def test_command_line_writes_the_csv(tmp_path, bundle, cli_error):
    logs = tmp_path / "logs"
    logs.mkdir()
    for name, avg in (("segment_1", 100), ("segment_2", 200), ("segment_3", 50), ("full", 300)):
        (logs / f"{name}.log").write_text(ANDROID_LOG.replace("218.75", str(avg)))
    out = tmp_path / "latency.csv"
    assert bench.main(["--bundle", str(bundle), "--logs", str(logs), "--out", str(out)]) == 0
    rows = {r["row"]: r for r in csv.DictReader(out.open())}
    assert float(rows["early_exit_expected"]["latency_us"]) == pytest.approx(212.5)
    assert float(rows["full_model"]["latency_us"]) == 300
    message = cli_error(bench.main, ["--bundle", str(bundle), "--logs", str(logs), "--out", str(out)])
    assert "already exists; pass --overwrite" in message
    (logs / "segment_2.log").write_text("Segmentation fault\n")
    message = cli_error(bench.main, ["--bundle", str(bundle), "--logs", str(logs), "--out", str(out),
                                     "--overwrite"])
    assert "segment_2.log" in message and "benchmark_model" in message
    assert float({r["row"]: r for r in csv.DictReader(out.open())}["full_model"]["latency_us"]) == 300  # kept


def test_log_timing_names_the_log(tmp_path):
    (tmp_path / "segment_1.log").write_text(ANDROID_LOG)
    assert latency.log_timing(tmp_path, "segment_1").avg_us == 218.75
    (tmp_path / "segment_1.log").write_text("killed\n")
    with pytest.raises(InputError, match="segment_1.log: no 'Inference"):
        latency.log_timing(tmp_path, "segment_1")


FAKE_ADB = """#!/usr/bin/env bash
# adb on the local disk: shell runs the command, push/pull copy
case "$1" in
  shell) shift; bash -c "$*" ;;
  push) cp "$2" "$3" ;;
  pull) cp -r "$2" "$3" ;;
esac
"""
# benchmark_model: refuses a missing graph or signature, else prints a summary line with a per-signature time
FAKE_BENCHMARK_MODEL = """#!/usr/bin/env bash
for arg in "$@"; do case "$arg" in --graph=*) graph=${arg#--graph=} ;; --signature_to_run_for=*) sig=${arg#*=} ;; esac; done
[ -f "$graph" ] || { echo "ERROR: Could not open '$graph'."; exit 1; }
case "$sig" in segment_1) t=100 ;; segment_2) t=200 ;; segment_3) t=50 ;; full) t=300 ;; *) echo "bad $sig"; exit 1 ;; esac
echo "Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 3, Inference (avg): $t"
"""


def test_android_script_runs_every_signature_and_combines(tmp_path, bundle):
    """device/android_benchmark.sh against a fake adb and benchmark_model: one run per signature, the CSV."""
    tools = {"adb": FAKE_ADB, "benchmark_model": FAKE_BENCHMARK_MODEL}
    for name, text in tools.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    env = dict(os.environ, ADB=str(tmp_path / "adb"), DEVICE_DIR=str(tmp_path / "device"), PYTHON=sys.executable)
    logs = tmp_path / "logs"
    completed = subprocess.run(["bash", "device/android_benchmark.sh", str(bundle), str(tmp_path / "benchmark_model"),
                                str(logs)], env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in logs.glob("*.log")) == ["full.log", "segment_1.log", "segment_2.log",
                                                         "segment_3.log"]
    rows = {r["row"]: r for r in csv.DictReader((logs / "latency.csv").open())}
    assert float(rows["early_exit_expected"]["latency_us"]) == pytest.approx(212.5)
    assert float(rows["full_model"]["latency_us"]) == 300
    assert rows["segment_2"]["signature"] == "segment_2"


def test_plan_lists_one_run_per_signature(bundle, capsys):
    assert bench.main(["--bundle", str(bundle), "--plan"]) == 0
    assert capsys.readouterr().out.splitlines() == ["model.tflite segment_1", "model.tflite segment_2",
                                                    "model.tflite segment_3", "model.tflite full"]
