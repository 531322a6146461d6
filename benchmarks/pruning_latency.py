"""Does sparsity make LiteRT faster? Dense vs pruned final-exit SmallCNN (and RDI early exit) on this CPU.

Exports image -> final-exit probabilities (batch 1, float32) of the dense
single-exit model, of the pruned model as is (zeros stored densely), and of the
pruned model converted with ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` (sparse
weight storage); with ``--rdi``, also the RDI model's early-exit segment chain
(:class:`rdinet_lite.runner.EarlyExitRunner`). LiteRT interpreters with
``num_threads=1``; after a warm-up, each test image runs through every variant
back to back, one image per invoke.

    python benchmarks/pruning_latency.py --dense runs/mnist/single_exit/model.keras \\
        --pruned runs/mnist/pruned_single_exit/model.keras \\
        --data-dir ../shared/data [--rdi runs/mnist/rdi_max_average/model.keras --images 1000]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from rdinet_tf import data, export, models
from rdinet_tf.architecture import flops
from rdinet_tf.baselines import pruning  # noqa: E402
from rdinet_tf.export import export_tflite  # noqa: E402
from rdinet_lite.runner import EarlyExitRunner  # noqa: E402


class FinalExit:
    """A LiteRT interpreter on a final-exit flatbuffer; ``__call__(image) -> (class, seconds, MFLOPs)``."""

    def __init__(self, flatbuffer, mflops):
        self.mflops = mflops
        self.size = f"{len(flatbuffer)} / {export.gzip_size(flatbuffer)}"
        self.interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.sparse_tensors = sum(bool(d.get("sparsity_parameters"))
                                  for d in self.interpreter.get_tensor_details())
        self.ops = sorted({op["op_name"] for op in self.interpreter._get_ops_details()})

    def __call__(self, image):
        start = time.perf_counter()
        self.interpreter.set_tensor(self.input, image)
        self.interpreter.invoke()
        prediction = int(self.interpreter.get_tensor(self.output).argmax())
        return prediction, time.perf_counter() - start, self.mflops


class EarlyExit:
    """The RDI model's exported segment chain; ``__call__(image) -> (class, seconds, MFLOPs)``."""

    def __init__(self, model, bundle_dir):
        export_tflite(model, bundle_dir)
        self.runner = EarlyExitRunner(bundle_dir, num_threads=1)
        self.costs = flops.exit_costs(model)
        self.size = f"{sum(p.stat().st_size for p in bundle_dir.glob('*.tflite'))} / " + str(
            sum(export.gzip_size(p.read_bytes()) for p in bundle_dir.glob("*.tflite")))
        self.sparse_tensors = 0

    def __call__(self, image):
        result = self.runner.run(image)
        return result.prediction, result.seconds, self.costs[result.exit]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dense", required=True, help="single-exit model.keras")
    parser.add_argument("--pruned", required=True,
                        help="model.keras written by rdinet-prune (python -m rdinet_tf.cli.prune)")
    parser.add_argument("--rdi", help="RDI model.keras (with thresholds): also time its early exit")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", help="directory with mnist.npz (e.g. ../shared/data)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args(argv)
    splits = data.load(args.dataset, data_dir=args.data_dir)
    images, labels = splits.x_test[:args.images], splits.y_test[:args.images]
    dense, pruned = models.load(args.dense), models.load(args.pruned)
    sparse_cost = pruning.final_exit_cost(pruned, sparse=True)
    variants = {
        "dense final exit": FinalExit(export.convert(export.full_model(dense)), pruning.final_exit_cost(dense)),
        "pruned, dense storage": FinalExit(export.convert(export.full_model(pruned)), sparse_cost),
        "pruned, EXPERIMENTAL_SPARSITY": FinalExit(
            export.convert(export.full_model(pruned), sparse_encoding=True), sparse_cost),
    }
    with tempfile.TemporaryDirectory() as work:
        if args.rdi:
            variants["RDI early exit (segment chain)"] = EarlyExit(models.load(args.rdi), Path(work) / "rdi")
        for image in images[:args.warmup]:
            for run in variants.values():
                run(image[None])
        outcomes = {name: [] for name in variants}
        for image in images:
            for name, run in variants.items():
                outcomes[name].append(run(image[None]))
    milliseconds = {name: 1000 * np.array([o[1] for o in results]) for name, results in outcomes.items()}
    reference = milliseconds["dense final exit"].mean()
    print("| variant | MFLOPs (honest; non-zero weights only) | .tflite / gzip (bytes) | sparse tensors "
          "| p50 / p95 / mean (ms) | mean latency vs dense | accuracy |")
    print("|" + "---|" * 7)
    for name, results in outcomes.items():
        times = milliseconds[name]
        accuracy = np.mean(np.array([o[0] for o in results]) == labels)
        print(f"| {name} | {np.mean([o[2] for o in results]):.3f} | {variants[name].size} "
              f"| {variants[name].sparse_tensors} | {np.median(times):.3f} / {np.percentile(times, 95):.3f} / "
              f"{times.mean():.3f} | {times.mean() / reference:.2f} | {accuracy:.2%} |")
    print(f"\nops of the sparse-encoded model: {', '.join(variants['pruned, EXPERIMENTAL_SPARSITY'].ops)}")


if __name__ == "__main__":
    main()
