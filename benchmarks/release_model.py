"""Release a finished training run: its model without optimizer state, and its summary, under benchmarks/models/.

    python benchmarks/release_model.py RUN_DIR NAME --data-dir DIR

writes ``benchmarks/models/NAME.keras`` (architecture, weights and calibrated exit policy; no optimizer state,
no compile settings: the summary holds those) and ``NAME.summary.json`` (the run's summary plus ``release_check``:
the released file's clean accuracy on the first ``--check-samples`` test images, which
tests/test_released_models.py recomputes). Both are written together, or neither.
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
    parser.add_argument("--data-dir", required=True, help="the directory holding the dataset's test split")
    parser.add_argument("--check-samples", type=int, default=500)
    args = parser.parse_args()
    summary = json.loads((args.run_dir / "summary.json").read_text())
    model = keras.models.load_model(args.run_dir / "model.keras", compile=False)
    splits = data.load(summary["dataset"]["name"], data_dir=args.data_dir, seed=summary["args"]["seed"])
    x, y = splits.x_test[:args.check_samples], splits.y_test[:args.check_samples]
    summary["release_check"] = {"samples": len(x), "accuracy": model.exit_policy.predict(model, x).accuracy(y)}
    files.publish(MODELS, {f"{args.name}.keras": model.save,
                           f"{args.name}.summary.json": files.json_writer(summary)})
    released = models.load(MODELS / f"{args.name}.keras")
    print(f"released {args.name}: {(MODELS / f'{args.name}.keras').stat().st_size / 2**20:.2f} MiB, "
          f"thresholds {released.exit_policy.thresholds.round(4).tolist()}, "
          f"check accuracy {summary['release_check']['accuracy']:.2%} on {len(x)} test images")


if __name__ == "__main__":
    main()
