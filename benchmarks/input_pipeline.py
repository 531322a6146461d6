"""Input pipeline against training step: the augmented CIFAR-10 pipeline must never be the bottleneck.

Times, in one process: (1) the training pipeline alone, ``make_dataset(shuffle=True, augment=True,
seed=0).repeat()`` over the real CIFAR-10 training split, ``--batches`` batches after
``--warmup-batches`` (the first batch fills the 45,000-image shuffle buffer; the default 500 batches
cross one epoch boundary, so one refill is counted); (2) ResNet-38 max-average PGD-10 training steps
(``train_on_batch`` with the paper recipe's optimizer) on one of those batches, median of ``--steps`` after one
warm-up step. The pipeline must be at least 20x faster than the step, so that it never holds training back.

Usage: python benchmarks/input_pipeline.py [--data-dir ../shared/data] [--batches 500] [--steps 3]
"""

import argparse
import itertools
import os
import time

import keras
import tensorflow as tf

from rdinet_tf import data, models
from rdinet_tf import attacks
from rdinet_tf.training import paper_optimizer
from timing import median_seconds

REQUIRED_RATIO = 20


def pipeline_images_per_second(dataset, warmup_batches, batches):
    """Images per second of ``batches`` batches of ``dataset`` after ``warmup_batches``."""
    iterator = iter(dataset)
    for _ in itertools.islice(iterator, warmup_batches):
        pass
    images = 0
    started = time.perf_counter()
    for images_batch, _ in itertools.islice(iterator, batches):
        images += len(images_batch)
    return images / (time.perf_counter() - started)


def step_images_per_second(images, labels, steps):
    """Images per second of ResNet-38 max-average PGD-10 training steps: median of ``steps`` after one warm-up."""
    paper = models.MODELS["resnet38"].paper_recipe
    model = models.build("resnet38")
    model.compile(optimizer=paper_optimizer(paper, paper.iterations), defense="max_average",
                  attack=attacks.PGD(paper.eps, paper.step_size, paper.train_attack_steps))
    return len(images) / median_seconds(lambda _: model.train_on_batch(images, labels), steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup-batches", type=int, default=20)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), tensorflow {tf.__version__}, "
          f"keras {keras.__version__}, load average {os.getloadavg()[0]:.2f}; batch {args.batch_size}")
    started = time.perf_counter()
    splits = data.load("cifar10", data_dir=args.data_dir)
    print(f"# data: {len(splits.x_train)} training images from {splits.source}, "
          f"loaded in {time.perf_counter() - started:.1f} s")
    dataset = data.make_dataset(splits.x_train, splits.y_train, args.batch_size, shuffle=True, augment=True,
                                seed=0).repeat()
    pipeline = pipeline_images_per_second(dataset, args.warmup_batches, args.batches)
    images, labels = next(iter(dataset))
    step = step_images_per_second(images, labels, args.steps)
    ratio = pipeline / step
    print(f"| measurement | images/s | ms per batch of {args.batch_size} |")
    print("|---|---|---|")
    print(f"| augmented input pipeline ({args.batches} batches after {args.warmup_batches}) | {pipeline:.0f} | "
          f"{1000 * args.batch_size / pipeline:.1f} |")
    print(f"| ResNet-38 max_average PGD-10 train step (median of {args.steps}) | {step:.1f} | "
          f"{1000 * args.batch_size / step:.0f} |")
    print(f"| ratio pipeline / step | {ratio:.0f}x | required >= {REQUIRED_RATIO}x: "
          f"{'met' if ratio >= REQUIRED_RATIO else 'NOT met'} |")
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
