"""Export a trained model for LiteRT: ``python -m rdinet_tf.export --tflite --model model.keras --out bundle/``.

Writes ``model.tflite`` (one signature per segment) and ``manifest.json`` (see
:mod:`rdinet_tf.export.tflite`); with ``--dataset``, representative images come
from its validation split and the bundle is checked against Keras on its test
split.
"""

import numpy as np

from rdinet_tf import data, files, models
from rdinet_tf.cli import base, common
from rdinet_tf.export import CLASS_NAMES, PRECISIONS, compare_with_keras, export_tflite


def parser():
    parser = base.ArgumentParser(prog="python -m rdinet_tf.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tflite", action="store_true", required=True,
                        help="export a TFLite bundle (the only format)")
    parser.add_argument("--model", required=True, help="path of a saved .keras multi-exit model "
                        "with calibrated thresholds")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--full", action="store_true", help="also export the full model (signature 'full')")
    parser.add_argument("--in-graph-exit", action="store_true",
                        help="also export the early exit as one signature with IF ops ('early_exit', thresholds "
                        "fixed); slower than the segment chain under LiteRT's XNNPACK (see README)")
    common.add_data_arguments(parser, required=False,
                              help="dataset for representative images (validation split: int8 calibration, "
                              "exit distribution), class names and the accuracy check (test split)")
    parser.add_argument("--representative", type=base.positive_int, default=300,
                        help="number of validation images used as representative images (default 300)")
    parser.add_argument("--eval-images", type=base.non_negative_int, default=1000,
                        help="test images for the TFLite-vs-Keras check (default 1000; 0 = skip)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return parser


@base.command(parser)
def main(args):
    files.check_replaceable(args.out, args.overwrite, inputs=[args.model])
    model = models.load(args.model)
    splits = None
    if args.dataset is not None:
        common.check_dataset(model, args.dataset, args.model)
        splits = data.load(args.dataset, data_dir=args.data_dir)
    manifest = export_tflite(
        model, args.out, args.precision,
        representative_images=None if splits is None else splits.x_val[: args.representative],
        include_full=args.full,
        in_graph_exit=args.in_graph_exit,
        class_names=None if splits is None else CLASS_NAMES[args.dataset],
        overwrite=args.overwrite,
        inputs=[args.model],
    )
    print(f"wrote {args.out}: {manifest['file']} ({manifest['bytes'] / 1024:.1f} KiB, {args.precision}), "
          f"{len(manifest['segments'])} segment signatures")
    for segment in manifest["segments"]:
        print(f"  {segment['signature']:<12} {segment['cost_mflops']['honest']['cumulative']:8.3f} MFLOPs "
              "cumulative (honest)")
    if splits is not None and args.eval_images > 0:
        count = min(args.eval_images, len(splits.x_test))
        report = compare_with_keras(model, args.out, splits.x_test[:count], splits.y_test[:count])
        print(f"on {count} {args.dataset} test images: TFLite {args.precision} accuracy "
              f"{report['tflite_accuracy']:.2%} vs Keras float32 {report['keras_accuracy']:.2%} "
              f"(change {report['accuracy_change']:+.2%}); same exit and prediction for "
              f"{report['same_exit_and_prediction']:.2%}")
        print(f"  exit shares TFLite {np.round(report['tflite_exit_shares'], 3).tolist()} "
              f"vs Keras {np.round(report['keras_exit_shares'], 3).tolist()}")


if __name__ == "__main__":
    raise SystemExit(main())
