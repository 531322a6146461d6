"""GPU check: max-average PGD-10 training throughput of ResNet-38 and MobileNetV2, and one CIFAR-10 epoch.

Under ``MirroredStrategy`` over every local GPU (the CPU if there is none), for
each model, global batch (128, 512) and mode — float32, mixed precision
(mixed_float16 on a GPU, mixed_bfloat16 on a CPU) and float32 with XLA
(``jit_compile=True``) — it times ``--steps`` training steps after one warm-up
and prints images/s. Then it trains the first model for one epoch of CIFAR-10
max-average PGD-10 training in its fastest mode and prints the epoch's time and
its TA on the test set. Sized for under 10 minutes on one recent GPU.

``--cpu-smoke`` runs the same code on the CPU in about two minutes (a ResNet-8,
``models.cifar_resnet(8)``, batch 8, PGD-1, 2 steps, an "epoch" of 4 batches,
TA on 256 test images) to check that it works; the tests run it.

Usage: python benchmarks/gpu_check.py [--data-dir ../shared/data] [--cpu-smoke]
       [--models resnet38,mobilenetv2 --batches 128,512 --attack-steps 10 --steps 10 --epoch-batches N]
"""

import argparse
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from rdinet_tf import data, models
from rdinet_tf.training import placement as placement_lib
from rdinet_tf import attacks
from rdinet_tf.training import paper_optimizer, precision_scope
from timing import fit_step_seconds

FULL = {"models": "resnet38,mobilenetv2", "batches": (128, 512), "attack_steps": 10, "steps": 10,
        "epoch_batches": None, "test_images": None}
SMOKE = {"models": "resnet8", "batches": (8,), "attack_steps": 1, "steps": 2, "epoch_batches": 4, "test_images": 256}


def modes(on_gpu):
    """``(label, precision, jit_compile)`` of each timed mode."""
    mixed = "mixed_float16" if on_gpu else "mixed_bfloat16"
    return [("float32", "float32", False), (mixed, mixed, False), ("float32 + XLA", "float32", True)]


def build(name):
    """``(model, paper recipe)``: a reference model by name, or ``resnetD`` for the CIFAR ResNet of depth D
    (ResNet-38's recipe)."""
    if name in models.MODELS:
        return models.build(name), models.MODELS[name].paper_recipe
    return models.cifar_resnet(int(name.removeprefix("resnet"))), models.MODELS["resnet38"].paper_recipe


def compiled_model(name, placement, precision, jit_compile, attack_steps, total_steps):
    with precision_scope(precision), placement.strategy.scope():
        model, paper = build(name)
        model.compile(optimizer=paper_optimizer(paper, total_steps), defense="max_average",
                      attack=attacks.PGD(paper.eps, paper.step_size, attack_steps), jit_compile=jit_compile)
    return model


def images_per_second(model, images, labels, steps):
    """Images/s of ``model.fit`` steps on one batch: median of ``steps`` after one warm-up step."""
    return len(images) / fit_step_seconds(model, tf.data.Dataset.from_tensors((images, labels)), steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data", help="CIFAR-10 (else tfds downloads it)")
    parser.add_argument("--models", help="comma-separated: resnet38, mobilenetv2, resnetD (default: "
                        "resnet38,mobilenetv2; smoke: resnet8)")
    parser.add_argument("--cpu-smoke", action="store_true", help="a few steps on the CPU: check the code runs")
    parser.add_argument("--batches", help="comma-separated global batches (default 128,512; smoke: 8)")
    parser.add_argument("--attack-steps", type=int, help="PGD steps of the training attack (default 10; smoke: 1)")
    parser.add_argument("--steps", type=int, help="timed steps per row (default 10; smoke: 2)")
    parser.add_argument("--epoch-batches", type=int, help="batches of the training 'epoch' (default: a full epoch)")
    args = parser.parse_args(argv)
    size = dict(SMOKE if args.cpu_smoke else FULL)
    if args.batches:
        size["batches"] = tuple(int(b) for b in args.batches.split(","))
    for key in ("models", "attack_steps", "steps", "epoch_batches"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    gpus = tf.config.list_physical_devices("GPU")
    if args.cpu_smoke:
        tf.config.set_visible_devices([], "GPU")
        gpus = []
    placement = placement_lib.place("mirrored")
    print(f"# {len(gpus)} GPU(s) {[g.name for g in gpus]}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
          f"tensorflow {tf.__version__}, keras {keras.__version__}; MirroredStrategy, {placement.replicas} replica(s); "
          f"max_average PGD-{size['attack_steps']}, median of {size['steps']} steps after one warm-up"
          + (" (--cpu-smoke)" if args.cpu_smoke else ""))
    splits = data.load("cifar10", data_dir=args.data_dir)
    print("| model | global batch | mode | images/s |")
    print("|---|---|---|---|")
    fastest = {}
    for name in size["models"].split(","):
        for batch in size["batches"]:
            images, labels = splits.x_train[:batch], splits.y_train[:batch]
            for label, precision, jit in modes(bool(gpus)):
                model = compiled_model(name, placement, precision, jit, size["attack_steps"], size["steps"] + 1)
                rate = images_per_second(model, images, labels, size["steps"])
                print(f"| {name} | {batch} | {label} | {rate:.1f} |", flush=True)
                if name == size["models"].split(",")[0] and rate > fastest.get("rate", 0):
                    fastest = {"name": name, "rate": rate, "label": label, "precision": precision, "jit": jit,
                               "batch": batch}
    epoch(splits, placement, fastest, size)


def epoch(splits, placement, mode, size):
    """Train ``mode``'s model for one epoch (or ``epoch_batches`` batches) in its mode; print its time and TA."""
    batch = mode["batch"]
    steps = size["epoch_batches"] or len(splits.x_train) // batch
    model = compiled_model(mode["name"], placement, mode["precision"], mode["jit"], size["attack_steps"], steps)
    train = data.make_dataset(splits.x_train, splits.y_train, batch, shuffle=True, augment=True, seed=0,
                              drop_remainder=True)
    started = time.perf_counter()
    model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    test = slice(None, size["test_images"])
    logits = model.predict(splits.x_test[test], batch_size=256, verbose=0)[-1]
    accuracy = float(np.mean(np.argmax(logits, -1) == splits.y_test[test]))
    print(f"\n{mode['name']}, {steps} steps of batch {batch} ({mode['label']}): {seconds:.1f} s, "
          f"{steps * batch / seconds:.1f} images/s; TA (last exit) {accuracy:.2%} on {len(logits)} test images")


if __name__ == "__main__":
    main()
