"""LiteRT latency of the full model vs the chained early-exit segments, on real test images.

For each model: thresholds calibrated with ``ExitPolicy.calibrate(equal_share)`` on
held-out training images, a float32 bundle exported with the full model, then
one image at a time with ``num_threads=1`` (after a warm-up), back to back per
image: the chained early-exit runner, the full model and each segment alone.

    python benchmarks/bench_tflite.py [--images 1000] [--out benchmarks/RESULTS_tflite.md]

Models: SmallCNN on MNIST, trained briefly (1 epoch on 10k clean images);
ResNet-38 and MobileNetV2 on CIFAR-10 with random weights (their latency does
not depend on the weights; their exit distribution comes from the calibrated
thresholds). Not a test; takes a few minutes on 2 CPU cores.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from rdinet_tf import bench_kit, models  # noqa: E402
from rdinet_tf.export import CLASS_NAMES, export_tflite  # noqa: E402
from rdinet_tf.policy import ExitPolicy  # noqa: E402
from rdinet_tf.runtime import EarlyExitRunner  # noqa: E402

DATA_DIR = Path("/work/shared/data")
CALIBRATION_IMAGES = 2000


def mnist():
    """(train x, train y, held-out x, test x, test y), float32 NHWC in [0, 1]."""
    with np.load(DATA_DIR / "mnist.npz") as arrays:
        x_train = arrays["x_train"][..., None].astype(np.float32) / 255
        x_test = arrays["x_test"][..., None].astype(np.float32) / 255
        return (x_train[:10_000], arrays["y_train"][:10_000].astype(np.int32),
                x_train[-CALIBRATION_IMAGES:], x_test, arrays["y_test"].astype(np.int32))


def cifar10():
    """(held-out x, test x, test y): held-out images are the first training images."""
    with np.load(DATA_DIR / "cifar10_train_10k.npz") as train, \
            np.load(DATA_DIR / "cifar10_test.npz") as test:
        return (train["x_train"][:CALIBRATION_IMAGES].astype(np.float32) / 255,
                test["x_test"].astype(np.float32) / 255, test["y_test"].astype(np.int32))


def train_one_epoch(model, images, labels, batch_size=128):
    """Plain clean training: sum over exits of cross-entropy, Adam, one pass."""
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.add_n([
                tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
                for logits in model(x, training=True)
            ])
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))

    order = np.random.default_rng(0).permutation(len(images))
    for start in range(0, len(images), batch_size):
        batch = order[start:start + batch_size]
        step(images[batch], labels[batch])


def benchmark(name, weights, model, held_out, test_x, test_y, dataset, work_dir, warmup):
    started = time.perf_counter()
    model.exit_policy = ExitPolicy.calibrate(model, held_out, method="equal_share")
    bundle = work_dir / name
    manifest = export_tflite(model, bundle, "float32", representative_images=held_out[:300],
                             include_full=True, class_names=CLASS_NAMES[dataset])
    runner = EarlyExitRunner(bundle, num_threads=1)
    result = bench_kit.benchmark_bundle(runner, test_x, warmup)
    honest = [s["cost_mflops"]["honest"]["cumulative"] for s in manifest["segments"]]
    expected_cost = float(np.asarray(honest) @ result["exit_shares"])
    early, full = result["early_exit_ms"], result["full_ms"]
    row = {
        "model": name,
        "weights": weights,
        "images": len(test_x),
        "shares": result["exit_shares"],
        "segments_kib": sum(s["bytes"] for s in manifest["segments"]) / 1024,
        "full_kib": manifest["full_model"]["bytes"] / 1024,
        "full": full,
        "early": early,
        "latency_ratio": early["mean"] / full["mean"],
        "predicted_ratio": result["predicted_early_exit_ms"] / full["mean"],
        "cost_ratio": expected_cost / manifest["full_model"]["cost_mflops"]["honest"],
        "expected_cost": expected_cost,
        "full_cost": manifest["full_model"]["cost_mflops"]["honest"],
        "segment_us": result["segment_us"],
        "accuracy": float(np.mean(result["predictions"] == test_y)),
        "seconds": time.perf_counter() - started,
    }
    print(f"{name}: done in {row['seconds']:.0f}s", flush=True)
    return row


def table(rows):
    header = ("| model | weights | exit distribution (test) | size segments / full (KiB) "
              "| full p50 / p95 (ms) | early exit p50 / p95 (ms) "
              "| measured latency EE/full (means) | expected cost EE/full (honest) "
              "| predicted from segment timings | EE accuracy |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['weights']} | {' / '.join(f'{s:.0%}' for s in r['shares'])} "
            f"| {r['segments_kib']:.0f} / {r['full_kib']:.0f} "
            f"| {r['full']['p50']:.3f} / {r['full']['p95']:.3f} "
            f"| {r['early']['p50']:.3f} / {r['early']['p95']:.3f} "
            f"| **{r['latency_ratio']:.2f}** | **{r['cost_ratio']:.2f}** "
            f"({r['expected_cost']:.2f} / {r['full_cost']:.2f} MFLOPs) "
            f"| {r['predicted_ratio']:.2f} | {r['accuracy']:.2%} |")
    return "\n".join(lines)


def machine_facts():
    lscpu = subprocess.run("lscpu | head", shell=True, capture_output=True, text=True).stdout
    from importlib.metadata import version

    return (f"```\n{lscpu.strip()}\n```\n\nos.cpu_count() = {os.cpu_count()}, "
            f"load average before the run: {os.getloadavg()[0]:.2f} (1 min); "
            f"{platform.python_implementation()} {platform.python_version()}, tensorflow "
            f"{tf.__version__}, keras {keras.__version__}, ai-edge-litert {version('ai-edge-litert')}, "
            f"numpy {np.__version__}.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="test images per model (default 1000)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed warm-up images (default 50)")
    parser.add_argument("--models", default="smallcnn,resnet38,mobilenetv2")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS_tflite.md")))
    args = parser.parse_args(argv)
    facts = machine_facts()
    keras.utils.set_random_seed(0)
    wanted = args.models.split(",")
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        if "smallcnn" in wanted:
            x_train, y_train, held_out, x_test, y_test = mnist()
            model = models.build("smallcnn")
            train_one_epoch(model, x_train, y_train)
            rows.append(benchmark("SmallCNN / MNIST", "trained 1 epoch on 10k clean images", model,
                                  held_out, x_test[:args.images], y_test[:args.images], "mnist",
                                  work_dir, args.warmup))
        cifar_models = [m for m in ("resnet38", "mobilenetv2") if m in wanted]
        if cifar_models:
            held_out, x_test, y_test = cifar10()
            for name in cifar_models:
                rows.append(benchmark(f"{dict(resnet38='ResNet-38', mobilenetv2='MobileNetV2')[name]} "
                                      "/ CIFAR-10", "random", models.build(name), held_out,
                                      x_test[:args.images], y_test[:args.images], "cifar10",
                                      work_dir, args.warmup))
    total = time.perf_counter() - started
    command = "python benchmarks/bench_tflite.py " + " ".join(argv if argv is not None else sys.argv[1:])
    segment_lines = "\n".join(
        f"- {r['model']}: " + ", ".join(f"{t:.0f}" for t in r["segment_us"]) for r in rows)
    report = f"""# TFLite (LiteRT) latency: full model vs chained early exit

Command: `{command.strip()}` (total {total:.0f} s, including training, calibration and export).

Float32 bundles, LiteRT `ai_edge_litert.interpreter.Interpreter` (XNNPACK), `num_threads=1`,
one image per invoke, {args.warmup} warm-up images, then {args.images} test images; for each image,
back to back: the early-exit chain (segment 1, compare entropy with T_1, stop or feed the feature
map to segment 2, ...), the full model, and each segment alone. Times include Python's
set/get-tensor calls. Thresholds:
`ExitPolicy.calibrate(model, held_out, method="equal_share")` on {CALIBRATION_IMAGES} held-out
training images (MNIST: the last {CALIBRATION_IMAGES} of the training set, not used for
training; CIFAR-10: the first {CALIBRATION_IMAGES} of `cifar10_train_10k.npz`).

{table(rows)}

- "measured latency EE/full": mean early-exit latency / mean full-model latency.
- "expected cost EE/full": expected honest cost of the measured exit distribution (conv + dense
  MACs of segments 1..k, every evaluated head counted) / honest cost of the full model (backbone +
  final head, no side heads).
- "predicted from segment timings": sum_k share_k * (t_1 + ... + t_k) / full, from each segment
  timed alone (what `rdinet_tf.bench_kit` computes from on-device `benchmark_model` logs).
- Accuracy is the early-exit accuracy on those test images (random-weight models: chance).

Mean time of each segment alone (us):

{segment_lines}

Machine:

{facts}
"""
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
