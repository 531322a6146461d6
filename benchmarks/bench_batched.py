"""Batched early exit against the full model, in TensorFlow, the serving SavedModel and LiteRT, at several batch sizes.

For each model (trained weights from ``--weights``, else random ones: with random weights the timing and
the routing are real, the accuracy is not), thresholds calibrated with equal shares on held-out images,
then on the test images, batch by batch, interleaved:

* TensorFlow: :func:`rdinet_tf.exits.policy.early_exit_function` (what
  ``ExitPolicy.predict_adaptive`` runs) against the folded full forward
  (every stage and the final head) as a ``tf.function``;
* SavedModel: ``serving_default`` against ``full`` of the exported SavedModel,
  loaded with ``tf.saved_model.load``;
* LiteRT: ``EarlyExitRunner.run_batch(batch, batch_size=B)`` against the
  bundle's ``full`` signature resized to the batch (batch 1: the per-image chain).

TensorFlow runs with one intra-op and one inter-op thread and LiteRT with
``num_threads=1``, so that a shared machine disturbs the ratios less. Each table
row is one run of this script; the ratio is total early-exit time over total
full-model time on the same images (each the fastest of ``--repeats`` passes),
against the honest cost ratio of the exits taken.

    python benchmarks/bench_batched.py [--weights smallcnn=M.keras,resnet38=R.keras] [--images 512] \
        [--batch-1-images 64] [--repeats 5] [--data-dir ../shared/data] [--out benchmarks/RESULTS_batched.md]

Not a test.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from bench_tflite import machine_facts  # noqa: E402

from rdinet_tf import data, models
from rdinet_tf.architecture import flops  # noqa: E402
from rdinet_tf.export import export_saved_model, export_tflite  # noqa: E402
from rdinet_tf.export.saved_model import full_function  # noqa: E402
from rdinet_tf.exits.policy import ExitPolicy, early_exit_function  # noqa: E402
from rdinet_lite.runner import EarlyExitRunner  # noqa: E402

BATCH_SIZES = (1, 32, 256)
MODELS = (("SmallCNN", "smallcnn", "mnist"), ("ResNet-38", "resnet38", "cifar10"),
          ("MobileNetV2", "mobilenetv2", "cifar10"))


def timed_pair(adaptive, full, batches, repeats):
    """Seconds of ``adaptive`` and of ``full`` over ``batches`` (interleaved batch by batch), each the fastest of
    ``repeats`` passes (the least disturbed by other work on the machine); and the exits."""
    for batch in batches[:2]:  # warm-up: traces, allocations
        adaptive(batch), full(batch)
    best, exits = np.full(2, np.inf), None
    for _ in range(repeats):
        found, totals = [], np.zeros(2)
        for batch in batches:
            start = time.perf_counter()
            found.append(adaptive(batch))
            middle = time.perf_counter()
            full(batch)
            totals += (middle - start, time.perf_counter() - middle)
        best, exits = np.minimum(best, totals), np.concatenate(found)
    return best, exits


def ways(model, bundle, saved_model):
    """Name -> (early exit, full, segments), each a function of a batch: the early exit returns the 0-based
    exits; ``segments`` runs every segment (stage + head) on the whole batch, one after another, and
    returns each one's seconds (None: not measured)."""
    early_exit = early_exit_function(model, model.exit_policy.thresholds)
    forward = tf.function(full_function(model), input_signature=[
        tf.TensorSpec((None, *model.image_shape), tf.float32)])
    stages, heads = model.inference_segments()
    tf_segments = [tf.function(lambda x, s=s, h=h: (lambda f: (f, h(f)))(s(x))) for s, h in zip(stages, heads)]
    served = tf.saved_model.load(str(saved_model))
    serve, serve_full = served.signatures["serving_default"], served.signatures["full"]
    runner = EarlyExitRunner(bundle, num_threads=1)

    def litert_full(batch):
        runner.full_model.invoke("image", batch)
        return runner.full_model.view("probs")

    def tf_segments_alone(batch):
        features, seconds = tf.constant(batch), []
        for segment in tf_segments:
            start = time.perf_counter()
            features, logits = segment(features)
            logits.numpy()
            seconds.append(time.perf_counter() - start)
        return seconds

    def litert_segments_alone(batch):
        features, input_name, seconds = batch, "image", []
        for segment in runner.segments:
            start = time.perf_counter()
            segment.invoke(input_name, features)
            seconds.append(time.perf_counter() - start)
            if "next_features" in segment.outputs:
                features, input_name = segment.output("next_features"), "features"
        return seconds

    return {
        "TensorFlow (1)": (lambda b: early_exit(tf.constant(b))[1].numpy(), lambda b: forward(tf.constant(b)),
                           tf_segments_alone),
        "SavedModel (2)": (lambda b: serve(images=tf.constant(b))["exit"].numpy() - 1,
                           lambda b: serve_full(images=tf.constant(b)), None),
        "LiteRT (3)": (lambda b: runner.run_batch(b, batch_size=len(b)).exits, litert_full, litert_segments_alone),
    }


def segments_alone(segments, batches, repeats):
    """Seconds of each segment on all of ``batches`` (the fastest of ``repeats`` passes), shape (K,)."""
    segments(batches[0])
    return np.min([np.sum([segments(batch) for batch in batches], axis=0) for _ in range(repeats)], axis=0)


def measure(label, name, dataset, weights, args, work_dir):
    splits = data.load(dataset, data_dir=args.data_dir)
    model = models.load(weights[name]) if name in weights else models.build(name)
    model.exit_policy = ExitPolicy.calibrate(model, splits.x_val[:args.images], method="equal_share")
    costs = flops.exit_costs(model, thresholds=model.exit_policy.thresholds)
    stages, heads = flops.segment_macs(model)
    full_cost = (sum(s.total for s in stages) + heads[-1].total) / 1e6
    bundle, saved_model = work_dir / f"{name}_bundle", work_dir / f"{name}_saved_model" / "1"
    export_tflite(model, bundle, include_full=True)
    export_saved_model(model, saved_model, include_full=True)
    rows = []
    for way, (adaptive, full, segments) in ways(model, bundle, saved_model).items():
        for batch_size in BATCH_SIZES:
            count = args.batch_1_images if batch_size == 1 else args.images
            images = splits.x_test[:count]
            batches = [images[i:i + batch_size] for i in range(0, count, batch_size)]
            (adaptive_s, full_s), exits = timed_pair(adaptive, full, batches, args.repeats)
            cost_ratio = costs[exits].mean() / full_cost
            shares = np.bincount(exits, minlength=model.num_exits) / len(exits)
            predicted = None
            if segments is not None:  # each image pays segments 1..k+1, timed alone on every image
                predicted = float(shares @ np.cumsum(segments_alone(segments, batches, args.repeats))) / full_s
            rows.append({"model": label, "weights": Path(weights[name]).name if name in weights else "random",
                         "way": way, "batch": batch_size, "images": count,
                         "shares": shares, "predicted_ratio": predicted,
                         "adaptive_ms": 1e3 * adaptive_s / count, "full_ms": 1e3 * full_s / count,
                         "latency_ratio": adaptive_s / full_s, "cost_ratio": cost_ratio})
            row = rows[-1]
            print(f"{label:<12} {way:<15} batch {batch_size:>3}: early exit {row['adaptive_ms']:.3f} ms/image, full "
                  f"{row['full_ms']:.3f}, latency ratio {row['latency_ratio']:.3f}, cost ratio {cost_ratio:.3f}, "
                  f"over {row['latency_ratio'] / cost_ratio:.3f}, segments alone predict "
                  f"{'-' if predicted is None else f'{predicted:.3f}'}", flush=True)
    return rows


def table(rows):
    lines = ["| model | weights | way | batch | exit shares | early exit (ms/image) | full (ms/image) | latency EE/full "
             "| cost EE/full (honest) | latency ratio / cost ratio | segments alone, predicted EE/full |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        predicted = "-" if r["predicted_ratio"] is None else f"{r['predicted_ratio']:.3f}"
        lines.append(f"| {r['model']} | {r['weights']} | {r['way']} | {r['batch']} | {' / '.join(f'{s:.0%}' for s in r['shares'])} "
                     f"| {r['adaptive_ms']:.3f} | {r['full_ms']:.3f} | {r['latency_ratio']:.3f} "
                     f"| {r['cost_ratio']:.3f} | **{r['latency_ratio'] / r['cost_ratio']:.3f}** | {predicted} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smallcnn,resnet38,mobilenetv2", help="comma-separated")
    parser.add_argument("--weights", default="", help="trained models, comma-separated NAME=FILE.keras "
                        "(default: random weights for every model)")
    parser.add_argument("--images", type=int, default=512, help="test images at batch 32 and 256 (default 512)")
    parser.add_argument("--batch-1-images", type=int, default=64, help="test images at batch 1 (default 64)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed passes over the images; the fastest counts (default 5)")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", help="write the report here (markdown)")
    args = parser.parse_args(argv)
    pairs = [pair.split("=", 1) for pair in args.weights.split(",") if pair]
    names = [name for _, name, _ in MODELS]
    if any(len(pair) != 2 or pair[0] not in names for pair in pairs):
        parser.error(f"--weights takes NAME=FILE.keras pairs, comma-separated, NAME one of {names}; "
                     f"got {args.weights!r}")
    weights = dict(pairs)
    facts = machine_facts()
    keras.utils.set_random_seed(0)  # the same random weights on every run
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for label, name, dataset in MODELS:
            if name in args.models.split(","):
                rows += measure(label, name, dataset, weights, args, Path(work))
    command = "python benchmarks/bench_batched.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = (f"Command: `{command.strip()}` ({time.perf_counter() - started:.0f} s)\n\n{table(rows)}\n\n"
              f"Machine:\n\n{facts}\n")
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
