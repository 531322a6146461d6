"""Parsing LiteRT benchmark_model logs and combining segment latencies into early-exit latency."""

import csv
import json

import numpy as np
import pytest

from rdinet_tf import bench_kit
from rdinet_tf.cli import bench
from rdinet_tf.errors import InputError

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

MANIFEST = {
    "segments": [
        {"file": f"segment_{k}.tflite", "cost_mflops": {"honest": {"cumulative": cost}}}
        for k, cost in ((1, 1.0), (2, 4.0), (3, 5.0))
    ],
    "full_model": {"file": "full_model.tflite", "cost_mflops": {"honest": 4.5}},
    "exit_distribution": {"shares": [0.5, 0.25, 0.25]},
}


def test_parse_summary_line_and_measured_run():
    timing = bench_kit.parse_benchmark_model(ANDROID_LOG)
    assert timing.avg_us == 218.75
    assert (timing.runs, timing.std_us, timing.median_us, timing.p95_us) == (4512, 17, 215, 245)


def test_parse_falls_back_to_the_last_count_line():
    timing = bench_kit.parse_benchmark_model(OLD_LOG)
    assert timing.avg_us == pytest.approx(2.95034e6)
    assert timing.runs == 50 and timing.median_us is None


def test_parse_refuses_a_failed_run():
    with pytest.raises(InputError, match="benchmark_model"):
        bench_kit.parse_benchmark_model("ERROR: Could not open 'segment_1.tflite'.\n")


def test_expected_latency_pays_segments_up_to_the_exit():
    # exit 1: 100; exit 2: 100 + 200; exit 3: 100 + 200 + 50
    assert bench_kit.expected_latency([100, 200, 50], [2, 1, 1]) == pytest.approx(
        (2 * 100 + 300 + 350) / 4)
    with pytest.raises(InputError, match=r"needs 2 non-negative counts or shares \(one per exit\).*\[1.0, 1.0, 1.0\]"):
        bench_kit.expected_latency([100, 200], [1, 1, 1])
    with pytest.raises(InputError, match="non-negative"):
        bench_kit.expected_latency([100, 200], [0, 0])
    with pytest.raises(InputError, match="one non-negative latency per segment"):
        bench_kit.expected_latency([100, -200], [1, 1])


def test_combine_rows_and_ratios():
    rows = {r["row"]: r for r in bench_kit.combine(MANIFEST, [100.0, 200.0, 50.0], [0.5, 0.25, 0.25],
                                                   full_latency_us=300.0)}
    assert rows["segment_3"]["cumulative_latency_us"] == 350
    assert rows["early_exit_expected"]["latency_us"] == pytest.approx(0.5 * 100 + 0.25 * 300 + 0.25 * 350)
    assert rows["early_exit_expected"]["mflops_honest"] == pytest.approx(0.5 * 1 + 0.25 * 4 + 0.25 * 5)
    assert rows["early_exit_over_full"]["latency_us"] == pytest.approx(212.5 / 300)
    assert rows["early_exit_over_full"]["mflops_honest"] == pytest.approx(2.75 / 4.5)


def test_distribution_csv_and_manifest(tmp_path):
    path = tmp_path / "exits.csv"
    path.write_text("exit,count\n1,30\n3,10\n2,60\n")
    np.testing.assert_allclose(bench_kit.read_distribution_csv(path, 3), [0.3, 0.6, 0.1])
    path.write_text("exit,share\n4,1\n")
    with pytest.raises(InputError, match="out of range"):
        bench_kit.read_distribution_csv(path, 3)
    assert bench_kit.manifest_distribution(MANIFEST).tolist() == [0.5, 0.25, 0.25]
    with pytest.raises(InputError, match="--distribution"):
        bench_kit.manifest_distribution({"exit_distribution": None})


def test_images_from_npz(tmp_path):
    path = tmp_path / "images.npz"
    np.savez(path, x_test=np.full((5, 28, 28), 255, np.uint8))
    images = bench_kit.images_from_npz(path, "x_test", (28, 28, 1), count=3)
    assert images.shape == (3, 28, 28, 1) and images.dtype == np.float32 and images.max() == 1
    with pytest.raises(InputError, match="expects"):
        bench_kit.images_from_npz(path, "x_test", (32, 32, 3))
    with pytest.raises(InputError, match="no array"):
        bench_kit.images_from_npz(path, "x_train", (28, 28, 1))


def test_command_line_writes_the_csv(tmp_path, cli_error):
    bundle, logs = tmp_path / "bundle", tmp_path / "logs"
    bundle.mkdir()
    logs.mkdir()
    manifest = dict(MANIFEST, format="rdinet_tflite_bundle", format_version=1, num_exits=3,
                    thresholds=[0.1, 0.2], segment_order=[s["file"] for s in MANIFEST["segments"]],
                    input={"shape": [1, 28, 28, 1]})
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    for name, avg in (("segment_1", 100), ("segment_2", 200), ("segment_3", 50), ("full_model", 300)):
        (logs / f"{name}.log").write_text(ANDROID_LOG.replace("218.75", str(avg)))
    out = tmp_path / "latency.csv"
    assert bench.main(["--bundle", str(bundle), "--logs", str(logs), "--out", str(out)]) == 0
    rows = {r["row"]: r for r in csv.DictReader(out.open())}
    assert float(rows["early_exit_expected"]["latency_us"]) == pytest.approx(212.5)
    assert float(rows["full_model"]["latency_us"]) == 300
    (logs / "segment_2.log").write_text("Segmentation fault\n")
    message = cli_error(bench.main, ["--bundle", str(bundle), "--logs", str(logs), "--out", str(out)])
    assert "segment_2.log" in message and "benchmark_model" in message
    assert float({r["row"]: r for r in csv.DictReader(out.open())}["full_model"]["latency_us"]) == 300  # kept


def test_log_timing_names_the_log(tmp_path):
    (tmp_path / "segment_1.log").write_text(ANDROID_LOG)
    assert bench_kit.log_timing(tmp_path, "segment_1.tflite").avg_us == 218.75
    (tmp_path / "segment_1.log").write_text("killed\n")
    with pytest.raises(InputError, match="segment_1.log: no 'Inference"):
        bench_kit.log_timing(tmp_path, "segment_1.tflite")
