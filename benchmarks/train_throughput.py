"""Adversarial-training throughput: truncated multi-exit attacks against a naive full-model version.

max_average PGD-10 training steps (batch 128) on SmallCNN and ResNet-38, both
implementations in the same process. The naive one runs the whole network
(all stages and heads) for every exit's attack, as a straightforward
implementation would; ours runs only the stages up to the attacked exit.

A second table times the attacks alone (compiled, PGD-10, ``--attack-batch``):
each single-exit attack, their sum, max-average, and K times the last exit's
attack (what K full passes would cost), for both implementations.

Usage: python benchmarks/train_throughput.py [--models smallcnn,resnet38] [--steps 5] [--attack-batch 32]
"""

import argparse
import os
import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from rdinet_tf import models
from rdinet_tf.adversarial import attacks
from rdinet_tf.models import MultiExitModel
from rdinet_tf.training import PRESETS


class FullForwardModel(MultiExitModel):
    """The same network, but every exit's logits come from a full forward pass."""

    def exit_logits(self, images, exits=None, training=False):
        logits = self(images, training=training)
        return [logits[k] for k in (range(self.num_exits) if exits is None else exits)]


def median_seconds(call, repeats):
    """Median seconds of ``call(i)`` for i = 1..repeats, after one warm-up ``call(0)``."""
    call(0)
    times = []
    for i in range(1, repeats + 1):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def step_seconds(model, images, labels, steps):
    """Median seconds of ``steps`` training steps after one warm-up step."""
    return median_seconds(lambda _: model.train_on_batch(images, labels), steps)


def attack_seconds(model, images, labels, attack, objective, repeats):
    """Median seconds of ``repeats`` compiled attacks after one warm-up (seed a tensor: no retracing)."""
    run = attacks.attack_function(model, attack, objective)
    return median_seconds(lambda seed: np.asarray(run(images, labels, tf.constant(seed))), repeats)


def attack_table(names, batch_size, repeats):
    """Print the attack-cost table: single exits, their sum, max-average, K x last exit."""
    print(f"\n# attacks alone: PGD-10, batch {batch_size}, median of {repeats} after warm-up, seconds")
    print("| model | implementation | last exit | sum of single exits | max_average | K x last exit |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name in names:
        preset = PRESETS[name]
        images = tf.constant(rng.random((batch_size, *models.INPUT_SHAPES[name]), dtype=np.float32))
        labels = tf.constant(rng.integers(0, 10, batch_size))
        attack = attacks.PGD(preset.eps, preset.step_size, 10)
        base = models.build(name)
        for label, cls in (("truncated", MultiExitModel), ("naive", FullForwardModel)):
            model = cls(base.stages, base.heads, name=f"{name}_{label}")
            singles = [attack_seconds(model, images, labels, attack, f"exit_{k + 1}", repeats)
                       for k in range(model.num_exits)]
            max_average = attack_seconds(model, images, labels, attack, "max_average", repeats)
            print(f"| {name} | {label} | {singles[-1]:.3f} | {sum(singles):.3f} | {max_average:.3f} | "
                  f"{model.num_exits * singles[-1]:.3f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smallcnn,resnet38")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--attack-batch", type=int, default=32, help="batch of the attack-cost table (0: skip it)")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"keras {keras.__version__}; max_average PGD-10, batch {args.batch_size}, "
          f"median of {args.steps} steps after warm-up")
    print("| model | truncated (ours) img/s | naive full-forward img/s | speed-up |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name in args.models.split(","):
        preset = PRESETS[name]
        shape = models.INPUT_SHAPES[name]
        images = rng.random((args.batch_size, *shape), dtype=np.float32)
        labels = rng.integers(0, 10, args.batch_size)
        attack = attacks.PGD(preset.eps, preset.step_size, 10)
        results = {}
        for label, cls in (("truncated", MultiExitModel), ("naive", FullForwardModel)):
            base = models.build(name)
            model = cls(base.stages, base.heads, name=f"{name}_{label}")
            model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), defense="max_average",
                          attack=attack)
            results[label] = args.batch_size / step_seconds(model, images, labels, args.steps)
        print(f"| {name} | {results['truncated']:.1f} | {results['naive']:.1f} | "
              f"{results['truncated'] / results['naive']:.2f}x |", flush=True)
    if args.attack_batch:
        attack_table(args.models.split(","), args.attack_batch, args.steps)


if __name__ == "__main__":
    main()
