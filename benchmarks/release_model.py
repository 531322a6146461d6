"""Release a finished training run: its model without optimizer state, and its reports, under benchmarks/models/.

    python benchmarks/release_model.py RUN_DIR NAME --data-dir DIR
    python benchmarks/release_model.py RUN_DIR NAME --suite

writes ``benchmarks/models/NAME.keras`` (architecture, weights and calibrated exit policy; no optimizer state,
no compile settings: the summary holds those), ``NAME.summary.json`` (the run's summary plus ``release_check``:
the released file's clean accuracy on the first ``--check-samples`` test images, which
tests/test_released_models.py recomputes) and, where the run has one, ``NAME.suite.json`` (its
``report_suite.json``: fast_study.sh's re-evaluation with the AutoAttack-style suite). All are written together,
or none; an existing release is replaced only with ``--overwrite``. ``--suite`` adds only the suite report of a
run whose model is released already (the run's summary must be the released one).
"""

import argparse
import json
from pathlib import Path

import keras

from rdinet_tf import data, models
from rdinet_lite import files

MODELS = Path(__file__).resolve().parent / "models"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished rdinet-train --out directory")
    parser.add_argument("name", help="released name: DATASET_MODEL_DEFENSE, e.g. cifar10_resnet38_max_average")
    parser.add_argument("--data-dir", help="the directory holding the dataset's test split")
    parser.add_argument("--check-samples", type=int, default=500)
    parser.add_argument("--suite", action="store_true", help="add only RUN_DIR's suite report to the release NAME")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing release NAME")
    args = parser.parse_args()
    if not (args.run_dir / "summary.json").is_file():
        parser.error(f"{args.run_dir} is not a finished run (no summary.json): pass an rdinet-train --out directory "
                     "whose training has finished")
    summary = json.loads((args.run_dir / "summary.json").read_text())
    suite = args.run_dir / "report_suite.json"
    if args.suite:
        release_suite(parser, args, summary, suite)
        return
    if args.data_dir is None:
        parser.error("--data-dir is required: the release check measures the model on the dataset's test images")
    if not args.overwrite and (existing := [p.name for p in MODELS.glob(f"{files.glob_escape(args.name)}.*")]):
        parser.error(f"{', '.join(existing)} exist: {args.name} is released already; pass --overwrite to "
                     "replace it, or --suite to add only the run's suite report")
    model = keras.models.load_model(args.run_dir / "model.keras", compile=False)
    splits = data.load(summary["dataset"]["name"], data_dir=args.data_dir, seed=summary["args"]["seed"])
    x, y = splits.x_test[:args.check_samples], splits.y_test[:args.check_samples]
    summary["release_check"] = {"samples": len(x), "accuracy": model.exit_policy.predict(model, x).accuracy(y)}
    outputs = {f"{args.name}.keras": model.save, f"{args.name}.summary.json": files.json_writer(summary)}
    if suite.is_file():
        outputs[f"{args.name}.suite.json"] = files.json_writer(json.loads(suite.read_text()))
    files.publish(MODELS, outputs, replace=args.overwrite)
    released = models.load(MODELS / f"{args.name}.keras")
    print(f"released {args.name}: {(MODELS / f'{args.name}.keras').stat().st_size / 2**20:.2f} MiB, "
          f"thresholds {released.exit_policy.thresholds.round(4).tolist()}, "
          f"check accuracy {summary['release_check']['accuracy']:.2%} on {len(x)} test images")


def release_suite(parser, args, summary, suite):
    """Add ``suite`` to the release ``args.name`` (whose summary must be ``summary``) as ``NAME.suite.json``."""
    released = MODELS / f"{args.name}.summary.json"
    if not released.is_file():
        parser.error(f"no release {args.name} (no {released}): release the run first, without --suite")
    if not suite.is_file():
        parser.error(f"{args.run_dir} has no report_suite.json: run fast_study.sh's RUN_suite for it first")
    if (MODELS / f"{args.name}.suite.json").exists() and not args.overwrite:
        parser.error(f"{args.name} has a suite report already: pass --overwrite to replace it")
    released_summary = json.loads(released.read_text())
    released_summary.pop("release_check")
    summary.pop("release_check", None)  # a run directory made from the release carries it too
    if summary != released_summary:
        parser.error(f"{args.run_dir}'s summary differs from the released {args.name}'s: its suite report is not "
                     "about the released model")
    files.publish(MODELS, {f"{args.name}.suite.json": files.json_writer(json.loads(suite.read_text()))},
                  replace=args.overwrite)
    print(f"added the suite report of {args.run_dir} to the release {args.name}")


if __name__ == "__main__":
    main()
