"""Export a trained model for LiteRT (``--out bundle/``) or TensorFlow Serving (``--saved-model DIR``).

``--out DIR`` writes the TFLite bundle, ``model.tflite`` (one signature per
segment) and ``manifest.json`` (see :mod:`rdinet_tf.export.tflite`);
``--saved-model DIR`` writes a SavedModel doing the early exit into
``DIR/<--version>`` (see :mod:`rdinet_tf.export.saved_model`); give either or
both. With ``--dataset``, representative images come from its validation split
and each export is checked against Keras on its test split. Also ``python -m
rdinet_tf.export``.
"""

from pathlib import Path

from rdinet_lite import arguments, files
from rdinet_lite.errors import InputError
from rdinet_tf.cli import common
from rdinet_tf.catalog import QUANTIZATIONS

TFLITE_ONLY = ("quantization", "in_graph_exit", "representative")
REPRESENTATIVE_IMAGES = 300


def parser():
    parser = arguments.ArgumentParser(prog="rdinet-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="path of a saved .keras multi-exit model "
                        "with calibrated thresholds")
    parser.add_argument("--out", help="TFLite bundle directory to write (model.tflite and manifest.json)")
    parser.add_argument("--tflite", action="store_true",
                        help="export the TFLite bundle: what --out does, accepted for older scripts")
    parser.add_argument("--saved-model", metavar="DIR",
                        help="export a SavedModel doing the early exit (serving_default) into DIR/<--version>, "
                        "for TensorFlow Serving (--model_base_path=DIR)")
    parser.add_argument("--version", type=arguments.positive_int, default=1,
                        help="the SavedModel's version folder under --saved-model (default: 1)")
    parser.add_argument("--quantization", choices=QUANTIZATIONS,
                        help="of the TFLite weights and activations (default: float32, none)")
    parser.add_argument("--full", action="store_true", help="also export the full model (signature 'full')")
    parser.add_argument("--in-graph-exit", action="store_true",
                        help="also export the early exit as one signature with IF ops ('early_exit', thresholds "
                        "fixed); slower than the segment chain under LiteRT's XNNPACK (see README)")
    common.add_data_arguments(parser, required=False,
                              help="dataset for representative images (validation split: int8 calibration, "
                              "exit distribution), class names and the accuracy check (test split) "
                              "(default: none: no check, no class names, the exit distribution unknown)")
    parser.add_argument("--representative", type=arguments.positive_int,
                        help="number of validation images used as representative images "
                        f"(default: {REPRESENTATIVE_IMAGES})")
    parser.add_argument("--eval-images", type=arguments.non_negative_int, default=1000,
                        help="test images for the check against Keras (default: 1000; 0 = skip)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out or version folder")
    return parser


def _check_arguments(args):
    """What to write, checked before any work; an option without its export is refused."""
    if args.tflite and args.out is None:
        raise InputError("--tflite needs --out DIR, the bundle directory to write")
    if args.out is None and not args.saved_model:
        raise InputError("choose what to export: --out DIR (LiteRT bundle) and/or --saved-model DIR "
                         "(TensorFlow Serving)")
    if args.out is not None:
        files.check_replaceable(args.out, args.overwrite, inputs=[args.model])
    else:
        given = [f"--{name.replace('_', '-')}" for name in TFLITE_ONLY if getattr(args, name) not in (None, False)]
        if given:
            raise InputError(f"{', '.join(given)} set the TFLite bundle; add --out DIR or drop them")
    if args.saved_model:
        files.check_replaceable(saved_model_dir(args), args.overwrite, inputs=[args.model])


def saved_model_dir(args):
    return Path(args.saved_model) / str(args.version)


@arguments.command(parser)
def main(args):
    _check_arguments(args)
    from rdinet_tf import data, models  # after parsing: --help loads no TensorFlow
    from rdinet_tf.experiments import settings

    model = models.load(args.model)
    splits = None
    if args.dataset is not None:
        settings.check_dataset(model, args.dataset, args.model)
        splits = data.load(args.dataset, data_dir=args.data_dir)
    count = 0 if splits is None else min(args.eval_images, len(splits.x_test))
    if args.out is not None:
        _export_tflite(args, model, splits, count)
    if args.saved_model:
        _export_saved_model(args, model, splits, count)


def _export_tflite(args, model, splits, count):
    import numpy as np

    from rdinet_tf.export import CLASS_NAMES, compare_with_keras, export_tflite

    quantization = args.quantization or "float32"
    representative = REPRESENTATIVE_IMAGES if args.representative is None else args.representative
    manifest = export_tflite(
        model, args.out, quantization,
        representative_images=None if splits is None else splits.x_val[:representative],
        include_full=args.full,
        in_graph_exit=args.in_graph_exit,
        class_names=None if splits is None else CLASS_NAMES[args.dataset],
        overwrite=args.overwrite,
        inputs=[args.model],
    )
    print(f"wrote {args.out}: {manifest['file']} ({manifest['bytes'] / 1024:.1f} KiB, {quantization}), "
          f"{len(manifest['segments'])} segment signatures")
    for segment in manifest["segments"]:
        print(f"  {segment['signature']:<12} {segment['cost_mflops']['honest']['cumulative']:8.3f} MFLOPs "
              "cumulative (honest)")
    if count > 0:
        report = compare_with_keras(model, args.out, splits.x_test[:count], splits.y_test[:count])
        print(f"on {count} {args.dataset} test images: TFLite {quantization} accuracy "
              f"{report['tflite_accuracy']:.2%} vs Keras float32 {report['keras_accuracy']:.2%} "
              f"(change {report['accuracy_change']:+.2%}); same exit and prediction for "
              f"{report['same_exit_and_prediction']:.2%}")
        print(f"  exit shares TFLite {np.round(report['tflite_exit_shares'], 3).tolist()} "
              f"vs Keras {np.round(report['keras_exit_shares'], 3).tolist()}")


def _export_saved_model(args, model, splits, count):
    from rdinet_tf.export import compare_saved_model, export_saved_model

    out = saved_model_dir(args)
    signatures = export_saved_model(model, out, include_full=args.full, overwrite=args.overwrite,
                                    inputs=[args.model])
    print(f"wrote {out}: SavedModel with signatures {', '.join(signatures)}; serve it with "
          f"tensorflow_model_server --model_base_path={Path(args.saved_model).resolve()}")
    if count > 0:
        report = compare_saved_model(model, out, splits.x_test[:count])
        print(f"on {count} {args.dataset} test images: same exit and prediction as Keras for "
              f"{report['same_exit_and_prediction']:.2%}; mean cost {report['mean_cost_mflops']:.3f} MFLOPs (honest)")


if __name__ == "__main__":
    raise SystemExit(main())
