"""LiteRT latency of the one-file bundle on real weights: early exit (segment chain, in-graph) vs the full model.

For each model, thresholds calibrated on held-out training images, a float32
bundle with every signature (segments, ``full``, ``early_exit``), then one image
at a time with ``num_threads=1`` after a warm-up, back to back per image: the
segment chain (``EarlyExitRunner``), the same chain through LiteRT's public
``SignatureRunner`` calls (what the runner's buffer reuse saves), the in-graph
early exit, the full model and each segment alone.

    python benchmarks/bench_tflite.py --smallcnn runs/mnist/rdi_max_average/model.keras \
        --resnet38 ../shared/models/resnet38_triple_wins.pth.tar [--mobilenetv2-epochs 1] \
        [--images 1000] [--int8-images 10000] [--data-dir ../shared/data] [--out benchmarks/RESULTS_tflite.md]

Models: a SmallCNN trained on MNIST (the README recipe, its own calibrated
thresholds), the authors' ResNet-38 checkpoint (imported, thresholds calibrated
with equal shares on the 5,000 held-out CIFAR-10 training images of
``data.load``), a MobileNetV2 trained clean for ``--mobilenetv2-epochs`` on
``--mobilenetv2-images`` CIFAR-10 training images (default 10,000; same calibration). ``--int8-images``: the
full-integer int8 bundle of the ResNet-38 (representative images: 300 held-out
training images) against float32 on that many test images. Not a test.
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

from rdinet_tf import data, models  # noqa: E402
from rdinet_lite import latency  # noqa: E402
from rdinet_lite.accounting import expected_cost  # noqa: E402
from rdinet_tf.architecture import flops  # noqa: E402
from rdinet_tf.baselines.pruning import final_exit_cost  # noqa: E402
from rdinet_tf.export import CLASS_NAMES, convert, export_tflite, full_model  # noqa: E402
from rdinet_tf.models.torch_checkpoint import load_torch_checkpoint  # noqa: E402
from rdinet_lite.inputs import entropy_bounds  # noqa: E402
from rdinet_tf.exits.policy import ExitPolicy  # noqa: E402
from rdinet_lite.manifest import BUNDLE_FILE  # noqa: E402
from rdinet_lite.runner import EarlyExitRunner  # noqa: E402

REPRESENTATIVE_IMAGES = 300


def train_clean(model, images, labels, epochs, batch_size=128):
    """Clean training (``defense="none"``: the sum over exits of the cross-entropy), Adam 1e-3, ``epochs``
    shuffled passes."""
    model.compile(optimizer=keras.optimizers.Adam(1e-3), defense="none")
    model.fit(data.make_dataset(images, labels, batch_size, shuffle=True, seed=0), epochs=epochs, verbose=0)


def public_signature_chain(runner):
    """The segment chain through ``SignatureRunner.__call__`` (resize, allocate, name lookups per call)."""
    signatures = [runner.interpreter.get_signature_runner(s.name) for s in runner.segments]
    last = len(signatures) - 1
    bounds = entropy_bounds(runner.thresholds)

    def run(image):
        start = time.perf_counter()
        inputs = {"image": image[None]}
        for index, signature in enumerate(signatures):
            outputs = signature(**inputs)
            if index == last or outputs["entropy"][0] < bounds[index]:
                break
            inputs = {"features": outputs["next_features"]}
        return time.perf_counter() - start

    return run


def latency_row(name, source, model, held_out, test_x, test_y, dataset, work_dir, warmup):
    """One table row: sizes, p50/p95 of every way of running the bundle, latency and cost ratios."""
    bundle = work_dir / name.split()[0]
    export_tflite(model, bundle, "float32", representative_images=held_out[:REPRESENTATIVE_IMAGES],
                  include_full=True, in_graph_exit=True, class_names=CLASS_NAMES[dataset])
    runner = EarlyExitRunner(bundle, num_threads=1)
    manifest = runner.manifest  # read back through rdinet_lite.manifest.Manifest
    in_graph = EarlyExitRunner(bundle, num_threads=1, in_graph=True)
    public = public_signature_chain(runner)
    for image in test_x[:warmup]:
        public(image)
    public_seconds = []
    result = latency.benchmark_bundle(runner, test_x, warmup, in_graph)
    for image in test_x:  # second pass, interleaved with the full model once more for its own ratio
        public_seconds.append((public(image), runner.run_full(image).seconds))
    public_seconds = np.array(public_seconds)
    # Honest costs: the chain computes every head it passes; the full model the stages and the final head.
    cost_ratio = expected_cost(flops.exit_costs(model), result["exit_shares"]) / final_exit_cost(model)
    full_ms = result["full_ms"]["mean"]
    row = {
        "model": name, "source": source, "shares": result["exit_shares"],
        "bundle_kib": manifest.bytes / 1024,
        "full_kib": len(convert(full_model(model))) / 1024,
        "full": result["full_ms"], "chain": result["early_exit_ms"], "in_graph": result["in_graph_ms"],
        "chain_ratio": result["early_exit_ms"]["mean"] / full_ms,
        "in_graph_ratio": result["in_graph_ms"]["mean"] / full_ms,
        "public_ratio": float(public_seconds[:, 0].mean() / public_seconds[:, 1].mean()),
        "predicted_ratio": result["predicted_early_exit_ms"] / full_ms,
        "cost_ratio": cost_ratio,
        "segment_us": result["segment_us"],
        "accuracy": float(np.mean(result["predictions"] == test_y)),
    }
    row["overhead"] = row["chain_ratio"] / cost_ratio
    print(f"{name}: chain/full {row['chain_ratio']:.3f}, cost ratio {cost_ratio:.3f}", flush=True)
    return row


def int8_comparison(model, held_out, test_x, test_y, timing_images, work_dir, warmup):
    """int8 vs float32 bundles of one model: accuracy, exit agreement, size, interleaved latency."""
    runners = {}
    for quantization in ("float32", "int8"):
        export_tflite(model, work_dir / f"int8cmp_{quantization}", quantization,
                      representative_images=held_out[:REPRESENTATIVE_IMAGES])
        runners[quantization] = EarlyExitRunner(work_dir / f"int8cmp_{quantization}", num_threads=1)
    results = {p: r.run_batch(test_x) for p, r in runners.items()}
    for image in test_x[:warmup]:
        for runner in runners.values():
            runner.run(image)
    seconds = {p: [] for p in runners}
    for image in test_x[:timing_images]:
        for quantization, runner in runners.items():
            seconds[quantization].append(runner.run(image).seconds)
    return {
        "images": len(test_x),
        "accuracy": {p: r.accuracy(test_y) for p, r in results.items()},
        "same_exit": float(np.mean(results["float32"].exits == results["int8"].exits)),
        "same_prediction": float(np.mean(results["float32"].predictions == results["int8"].predictions)),
        "shares": {p: r.exit_shares.tolist() for p, r in results.items()},
        "kib": {p: (work_dir / f"int8cmp_{p}" / BUNDLE_FILE).stat().st_size / 1024 for p in runners},
        "ms": {p: latency.percentiles_ms(s) for p, s in seconds.items()},
        "timing_images": timing_images,
    }


def table(rows):
    header = ("| model | weights | exit distribution (test) | bundle / full alone (KiB) | full p50 / p95 (ms) "
              "| chain p50 / p95 (ms) | in-graph p50 / p95 (ms) | latency chain/full | cost EE/full (honest) "
              "| chain ratio / cost ratio | segments alone, predicted/full | public SignatureRunner chain/full "
              "| in-graph/full | EE accuracy |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['source']} | {' / '.join(f'{s:.0%}' for s in r['shares'])} "
            f"| {r['bundle_kib']:.0f} / {r['full_kib']:.0f} "
            f"| {r['full']['p50']:.3f} / {r['full']['p95']:.3f} "
            f"| {r['chain']['p50']:.3f} / {r['chain']['p95']:.3f} "
            f"| {r['in_graph']['p50']:.3f} / {r['in_graph']['p95']:.3f} "
            f"| **{r['chain_ratio']:.3f}** | **{r['cost_ratio']:.3f}** | **{r['overhead']:.3f}** "
            f"| {r['predicted_ratio']:.3f} | {r['public_ratio']:.3f} | {r['in_graph_ratio']:.3f} "
            f"| {r['accuracy']:.2%} |")
    return "\n".join(lines)


def int8_table(result):
    lines = ["| quantization | bundle (KiB) | accuracy | exit shares | early exit p50 / p95 / mean (ms) |",
             "|---|---|---|---|---|"]
    for quantization in ("float32", "int8"):
        ms = result["ms"][quantization]
        lines.append(f"| {quantization} | {result['kib'][quantization]:.0f} | {result['accuracy'][quantization]:.2%} "
                     f"| {' / '.join(f'{s:.1%}' for s in result['shares'][quantization])} "
                     f"| {ms['p50']:.3f} / {ms['p95']:.3f} / {ms['mean']:.3f} |")
    return "\n".join(lines) + (
        f"\n\nSame exit: {result['same_exit']:.2%}, same prediction: {result['same_prediction']:.2%} of "
        f"{result['images']} test images; latency on the first {result['timing_images']}, interleaved "
        f"(int8 / float32 mean: {result['ms']['int8']['mean'] / result['ms']['float32']['mean']:.3f}).")


def machine_facts():
    lscpu = subprocess.run("lscpu | grep -E 'Model name|^CPU\\(s\\)'", shell=True, capture_output=True,
                           text=True).stdout
    flags = subprocess.run("lscpu | grep -oE 'avx2|avx512f|avx512_vnni|avx512_bf16|avx_vnni' | sort -u | xargs",
                           shell=True, capture_output=True, text=True).stdout.strip()
    lscpu += f"Vector extensions: {flags}\n"
    from importlib.metadata import version

    return (f"```\n{lscpu.strip()}\n```\n\nos.cpu_count() = {os.cpu_count()}, "
            f"load average before the run: {os.getloadavg()[0]:.2f} (1 min); "
            f"{platform.python_implementation()} {platform.python_version()}, tensorflow "
            f"{tf.__version__}, keras {keras.__version__}, ai-edge-litert {version('ai-edge-litert')}, "
            f"numpy {np.__version__}.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smallcnn", help=".keras SmallCNN trained on MNIST, with its thresholds")
    parser.add_argument("--resnet38", help="the authors' ResNet-38 PyTorch checkpoint")
    parser.add_argument("--mobilenetv2-epochs", type=int, default=0,
                        help="train a MobileNetV2 clean for this many epochs on CIFAR-10 images (0: skip)")
    parser.add_argument("--mobilenetv2-images", type=int, default=10_000,
                        help="the MobileNetV2's training images (default 10,000)")
    parser.add_argument("--images", type=int, default=1000, help="test images per model (default 1000)")
    parser.add_argument("--int8-images", type=int, default=0,
                        help="ResNet-38 int8 vs float32 on this many test images (0: skip)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed warm-up images (default 50)")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS_tflite.md")))
    args = parser.parse_args(argv)
    facts = machine_facts()
    keras.utils.set_random_seed(0)
    rows, int8, seconds = [], None, {}
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        if args.smallcnn:
            started = time.perf_counter()
            mnist = data.load("mnist", data_dir=args.data_dir)
            model = models.load(args.smallcnn)
            rows.append(latency_row("SmallCNN / MNIST", f"`{args.smallcnn}` (its own thresholds)", model, mnist.x_val,
                                mnist.x_test[:args.images], mnist.y_test[:args.images], "mnist", work_dir,
                                args.warmup))
            seconds["SmallCNN"] = time.perf_counter() - started
        if args.resnet38 or args.mobilenetv2_epochs:
            cifar = data.load("cifar10", data_dir=args.data_dir)
        if args.resnet38:
            started = time.perf_counter()
            model = load_torch_checkpoint(args.resnet38, "resnet38")
            model.exit_policy = ExitPolicy.calibrate(model, cifar.x_val, method="equal_share")
            rows.append(latency_row("ResNet-38 / CIFAR-10", "the authors' checkpoint, imported", model, cifar.x_val,
                                cifar.x_test[:args.images], cifar.y_test[:args.images], "cifar10", work_dir,
                                args.warmup))
            seconds["ResNet-38"] = time.perf_counter() - started
            if args.int8_images:
                started = time.perf_counter()
                int8 = int8_comparison(model, cifar.x_val, cifar.x_test[:args.int8_images], cifar.y_test[:args.int8_images],
                                       args.images, work_dir, args.warmup)
                seconds["ResNet-38 int8"] = time.perf_counter() - started
        if args.mobilenetv2_epochs:
            started = time.perf_counter()
            model = models.build("mobilenetv2")
            train_x, train_y = cifar.x_train[:args.mobilenetv2_images], cifar.y_train[:args.mobilenetv2_images]
            train_clean(model, train_x, train_y, args.mobilenetv2_epochs)
            model.exit_policy = ExitPolicy.calibrate(model, cifar.x_val, method="equal_share")
            rows.append(latency_row("MobileNetV2 / CIFAR-10",
                                f"trained clean {args.mobilenetv2_epochs} epoch(s) on {len(train_x):,} images (Adam 1e-3)",
                                model, cifar.x_val, cifar.x_test[:args.images], cifar.y_test[:args.images], "cifar10",
                                work_dir, args.warmup))
            seconds["MobileNetV2"] = time.perf_counter() - started
    command = "python benchmarks/bench_tflite.py " + " ".join(argv if argv is not None else sys.argv[1:])
    segment_lines = "\n".join(f"- {r['model']}: " + ", ".join(f"{t:.0f}" for t in r["segment_us"]) for r in rows)
    durations = ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
    report = f"""# TFLite (LiteRT) latency: one-file bundle, early exit vs full model, real weights

[Back to the benchmark summary](RESULTS.md#summary).

Command: `{command.strip()}` (wall time per part, including loading, training, calibration and
export: {durations}).

Float32 bundles (one `model.tflite`: signatures `segment_1..K`, `full`, `early_exit`), LiteRT
`ai_edge_litert.interpreter.Interpreter` (XNNPACK), `num_threads=1`, one image per invoke,
{args.warmup} warm-up images, then {args.images} test images; per image, back to back: the segment
chain (`EarlyExitRunner.run`), the in-graph early exit (`EarlyExitRunner(..., in_graph=True)`), the
full model and each segment alone; then a second pass alternating the chain through LiteRT's public
`SignatureRunner` calls with the full model. Times include the Python calls around the invokes.

{table(rows)}

- "latency chain/full": mean chain latency / mean full-model latency; "cost EE/full": expected honest
  cost of the measured exit distribution (segments 1..k, every evaluated head counted) / honest cost of
  the full model (backbone + final head). "chain ratio / cost ratio" is the target (<= 1.10).
- "segments alone, predicted/full": sum_k share_k * (t_1 + ... + t_k) / full from each segment timed alone
  (what `rdinet_lite.latency` computes from on-device `benchmark_model` logs); the chain's own cost (Python,
  the feature-map copies) is the difference between it and "latency chain/full".
- "bundle": the one file with every signature; "full alone": the full model converted on its own.

Mean time of each segment alone (us):

{segment_lines}
"""
    if int8 is not None:
        report += f"""
## int8 (full-integer) vs float32: the authors' ResNet-38

{int8_table(int8)}
"""
    report += f"""
Machine:

{facts}
"""
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
