"""Real-MNIST matched comparison: single-exit SmallCNN, its pruned version at RDI's cost, RDI-SmallCNN.

Reads the runs of benchmarks/mnist_rdi.sh (``RUNS/single_exit`` and
``RUNS/rdi_max_average``: ``model.keras`` + ``summary.json``, and the RDI
model's ``report.json`` from ``rdinet-evaluate`` if there is one), prunes the
defended single-exit model to the RDI model's average honest cost with
:func:`rdinet_tf.experiments.prune` (``rdinet-prune``'s run, fast adversarial fine-tune), and prints the
side-by-side table: TA, worst-case ATA, MFLOPs in both conventions, model size.

    python benchmarks/pruning_mnist.py --data-dir ../shared/data [--runs runs/mnist]
        [--epochs 1 --steps-per-epoch 400] [--control] [--reuse]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from rdinet_tf import experiments, export, models  # noqa: E402
from rdinet_lite.errors import InputError  # noqa: E402
from rdinet_tf.export import export_tflite  # noqa: E402
from mnist_table import attacked_report  # noqa: E402  (beside this script)


def read_run(directory):
    """(model.keras path, summary) of a finished run."""
    model_path, summary_path = directory / "model.keras", directory / "summary.json"
    if not (model_path.is_file() and summary_path.is_file()):
        raise InputError(f"{directory} has no model.keras + summary.json; run benchmarks/mnist_rdi.sh first")
    return model_path, json.loads(summary_path.read_text())


def keras_bytes(model):
    """Bytes of ``model`` saved as .keras without optimizer state (loaded models have none)."""
    with tempfile.TemporaryDirectory() as work:
        model.save(Path(work) / "model.keras")
        return (Path(work) / "model.keras").stat().st_size


def segments_gzip_bytes(model):
    """gzip-compressed bytes of the model's float32 TFLite early-exit segments, summed."""
    with tempfile.TemporaryDirectory() as work:
        export_tflite(model, Path(work) / "bundle")
        return sum(export.gzip_size(path.read_bytes()) for path in (Path(work) / "bundle").glob("*.tflite"))


def prune_run(args, source, out, **target):
    """The pruned baseline of ``source`` at ``target`` into ``out`` (skipped with --reuse when done)."""
    if not (args.reuse and (out / "summary.json").is_file()):
        experiments.prune(experiments.PruneConfig(
            model=source, dataset=args.dataset, data_dir=args.data_dir, out=out, **target, fast=True, eps=0.3,
            step_size=0.01, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, eval_attack_steps=40,
            eval_samples=args.eval_samples, quiet=True))
    return read_run(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs/mnist")
    parser.add_argument("--dataset", default="mnist", help="digits: a quick check of the script")
    parser.add_argument("--data-dir", help="directory with mnist.npz (e.g. ../shared/data)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps-per-epoch", type=int, default=400)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--control", action="store_true",
                        help="also fine-tune the single-exit model the same way at sparsity 0 (extra-training control)")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs of this script in RUNS")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    single_path, _ = read_run(runs / "single_exit")
    rdi_path, rdi = read_run(runs / "rdi_max_average")
    pruned_path, pruned = prune_run(args, single_path, runs / "pruned_single_exit",
                                    target_mflops=rdi["test_clean"]["mflops"])
    rows = [("defended single-exit SmallCNN", pruned["source"], models.load(single_path), False)]
    if args.control:
        control_path, control = prune_run(args, single_path, runs / "finetuned_single_exit", target_sparsity=0.0)
        rows.append(("same + the same fine-tune, unpruned", control["pruned"], models.load(control_path),
                     False))
    rows.append((f"same, pruned to {pruned['sparsity']:.1%} sparsity", pruned["pruned"],
                 models.load(pruned_path), True))
    print(f"| model | TA (test split) | worst-case ATA ({pruned['ata_samples']} images, PGD-40) "
          "| MFLOPs (honest) | MFLOPs (paper) | .keras (bytes) | .tflite gzip (bytes) |")
    print("|" + "---|" * 7)
    for name, row, model, sparse_encoding in rows:
        tflite_bytes = export.gzip_size(export.convert(export.full_model(model), sparse_encoding=sparse_encoding))
        print(f"| {name} | {row['accuracy']:.2%} | {row['ata']:.2%} | {row['mflops']:.3f} | "
              f"{row['paper_mflops']:.3f} | {keras_bytes(model)} | {tflite_bytes} |")
    rdi_model, clean = models.load(rdi_path), rdi["test_clean"]
    rdi_report = attacked_report(runs / "rdi_max_average")
    print(f"| RDI-SmallCNN (max_average) | {clean['accuracy']:.2%} | {rdi_report['worst_case_ata']:.2%} "
          f"({rdi_report['num_samples']} images) | "
          f"{clean['mflops']:.3f} | {clean['paper_mflops']:.3f} | {keras_bytes(rdi_model)} | "
          f"{segments_gzip_bytes(rdi_model)} |")
    print(f"\nfine-tune: {pruned['fine_tune']['steps']} steps, {pruned['fine_tune']['seconds']:.0f} s; "
          f"target {pruned['target_mflops']:.3f} MFLOPs ({pruned['convention']})")


if __name__ == "__main__":
    try:
        main()
    except InputError as error:
        sys.exit(f"error: {error}")
