"""Epoch time of the fast recipe per model: training step, the guard's attack and validation, timed in one run.

    python benchmarks/recipe_epoch_time.py [--data-dir ../shared/data] [--models resnet38,mobilenetv2] [--steps 10]

Each model is built and compiled as ``rdinet-train --recipe fast --defense max_average`` builds it; the step is
timed on real CIFAR-10 batches after one warm-up step (median of ``--steps``); the guard and the validation
pass once each after a warm-up. The epoch estimate is steps per epoch x step + guard + validation; the last
column is how many such epochs fit in 2 hours.
"""

import argparse
import math

import keras

from rdinet_tf import data, models
from rdinet_tf.training.guard import GUARD_SAMPLES, CatastrophicOverfittingGuard, guard_attack
from timing import median_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--models", default="resnet38,mobilenetv2")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    splits = data.load("cifar10", data_dir=args.data_dir)
    print(f"{'model':<12}{'step s':>8}{'steps/epoch':>13}{'guard s':>9}{'val s':>7}{'epoch s':>9}{'epochs in 2 h':>15}")
    for name in args.models.split(","):
        recipe, eps = models.MODELS[name].fast_recipe, models.MODELS[name].paper_recipe.eps
        keras.utils.set_random_seed(0)
        model = models.build(name)
        steps_per_epoch = math.ceil(len(splits.x_train) / recipe.batch_size)
        model.compile(optimizer=recipe.optimizer(recipe.epochs * steps_per_epoch), defense="max_average",
                      attack=recipe.training_attack(eps))
        batches = iter(data.make_dataset(splits.x_train, splits.y_train, recipe.batch_size, shuffle=True,
                                         augment=True, seed=0).repeat())
        step = median_seconds(lambda _: model.train_on_batch(*next(batches)), args.steps)
        guard = CatastrophicOverfittingGuard(splits.x_val[:GUARD_SAMPLES], splits.y_val[:GUARD_SAMPLES],
                                             guard_attack(eps), verbose=0)
        guard.set_model(model)
        guard_seconds = median_seconds(lambda _: guard.exit_accuracies(), 1)
        validation = data.make_dataset(splits.x_val, splits.y_val, 256)
        val_seconds = median_seconds(lambda _: model.evaluate(validation, verbose=0), 1)
        epoch = steps_per_epoch * step + guard_seconds + val_seconds
        print(f"{name:<12}{step:>8.2f}{steps_per_epoch:>13}{guard_seconds:>9.1f}{val_seconds:>7.1f}{epoch:>9.0f}"
              f"{7200 / epoch:>15.1f}")


if __name__ == "__main__":
    main()
