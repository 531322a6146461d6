"""Epoch time of the fast recipe per model and defense: training step, the guard's attack and validation, timed
in one run.

    python benchmarks/recipe_epoch_time.py [--data-dir ../shared/data] [--models resnet38,mobilenetv2] [--steps 10]
        [--defenses max_average,main,routing,exit_hijack,worst_case,worst_case+slowdown]

Each model is built and compiled as ``rdinet-train --recipe fast --defense DEFENSE`` builds it (``+slowdown``:
with ``--slowdown-weight 2``; the policy-aware defenses attack thresholds that let an equal share of 512
validation images out at each exit, as a calibration in training would); the step is timed on real batches of the
model's dataset after one warm-up step (median of ``--steps``); the guard and the validation pass once each per
model after a warm-up. The epoch estimate is steps per epoch x step + guard + validation; the last columns are
how many such epochs fit in 2 hours and the epoch time over the first defense's, which is what sets each run's
epochs in ``fast_study.sh`` (the ratio holds across machines and loads; the absolute times do not).
"""

import argparse
import math

import keras

from rdinet_tf import data, models
from rdinet_tf.catalog import DEFENSES
from rdinet_tf.exits.policy import ExitPolicy
from rdinet_tf.training.guard import GUARD_SAMPLES, CatastrophicOverfittingGuard, guard_attack
from timing import median_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--models", default="resnet38,mobilenetv2", help="comma-separated, from smallcnn, "
                        "resnet38, mobilenetv2 (each on its own dataset)")
    parser.add_argument("--defenses", default="max_average",
                        help="comma-separated; DEFENSE+slowdown adds the slowdown term (weight 2)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    defenses, names = args.defenses.split(","), args.models.split(",")
    for name in names:
        if name not in models.MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(models.MODELS)}")
    trained = [defense for defense in DEFENSES if defense != "none"]
    for defense in defenses:
        if defense.removesuffix("+slowdown") not in trained:
            parser.error(f"unknown defense {defense!r}; choose from {', '.join(trained)}, each optionally "
                         "followed by +slowdown")
    print(f"{'model':<12}{'defense':<22}{'step s':>8}{'steps/epoch':>13}{'guard s':>9}{'val s':>7}{'epoch s':>9}"
          f"{'epochs in 2 h':>15}{'epoch / first':>15}")
    for name in names:
        spec = models.MODELS[name]
        recipe, eps = spec.fast_recipe, spec.paper_recipe.eps
        splits = data.load(spec.dataset, data_dir=args.data_dir)
        steps_per_epoch = math.ceil(len(splits.x_train) / recipe.batch_size)
        batches = iter(data.make_dataset(splits.x_train, splits.y_train, recipe.batch_size, shuffle=True,
                                         augment=spec.paper_recipe.augment and spec.dataset == "cifar10",
                                         seed=0).repeat())
        overhead, first = None, None
        for defense in defenses:
            keras.utils.set_random_seed(0)
            model = models.build(name)
            num_side_exits = model.num_exits - 1
            policy = ExitPolicy.for_shares(model, splits.x_val[:512], [1 / model.num_exits] * num_side_exits)
            model.compile(optimizer=recipe.optimizer(recipe.epochs * steps_per_epoch),
                          defense=defense.removesuffix("+slowdown"), attack=recipe.training_attack(eps),
                          slowdown_weight=2.0 if defense.endswith("+slowdown") else 0.0,
                          training_thresholds=policy.thresholds)
            step = median_seconds(lambda _: model.train_on_batch(*next(batches)), args.steps)
            if overhead is None:  # the guard and the validation do not depend on the defense
                guard = CatastrophicOverfittingGuard(splits.x_val[:GUARD_SAMPLES], splits.y_val[:GUARD_SAMPLES],
                                                     guard_attack(eps), verbose=0)
                guard.set_model(model)
                guard_seconds = median_seconds(lambda _: guard.exit_accuracies(), 1)
                validation = data.make_dataset(splits.x_val, splits.y_val, 256)
                val_seconds = median_seconds(lambda _: model.evaluate(validation, verbose=0), 1)
                overhead = guard_seconds + val_seconds
            epoch = steps_per_epoch * step + overhead
            first = first or epoch
            print(f"{name:<12}{defense:<22}{step:>8.2f}{steps_per_epoch:>13}{guard_seconds:>9.1f}{val_seconds:>7.1f}"
                  f"{epoch:>9.0f}{7200 / epoch:>15.1f}{epoch / first:>15.2f}")

if __name__ == "__main__":
    main()
