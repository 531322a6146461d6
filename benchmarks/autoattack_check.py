"""Our APGD-CE and APGD-T against an independent implementation (ART's AutoProjectedGradientDescent), same model.

One exit of a trained multi-exit model as a plain classifier
(``model.exit_logits(x, [k])[0]``), the first ``--samples`` test images, the
same L-inf eps, steps and one restart on both sides; only the samples the exit
gets right are attacked, accuracy is over all of them:

* ours: the suite's own APGD run (``autoattack.suite_attack``: ``APGD``
  through ``attacks.generate`` with objective ``exit_K``, driven by
  ``AttackDriver`` with a policy that answers from exit K), cross-entropy; and
  APGD-T, targeted DLR towards the 2nd .. 10th most likely class of the clean
  image, each target on the samples still correct (batch i seeded ``--seed`` + i);
* ART: ``AutoProjectedGradientDescent`` (initial step 2 eps as the reference,
  ``nb_random_init=1``) on a ``TensorFlowV2Classifier`` wrapping the same
  exit: ``loss_type="cross_entropy"``; and ``targeted=True,
  loss_type="difference_logits_ratio"`` towards the same 9 targets in the
  same order (ART's ``AutoAttack`` has no top-k targets: its targeted mode
  tries every class with every attack).

A benchmark, not a test; ART is no dependency of the package. Install it
(version used: 1.20.1), then run::

    pip install adversarial-robustness-toolbox==1.20.1
    python benchmarks/autoattack_check.py [--model runs/mnist/rdi_max_average/model.keras]
        [--data-dir ../shared/data] [--samples 1000] [--steps 100] [--exit K] [--eps 0.3] [--seed 0]
    python benchmarks/autoattack_check.py --model ../shared/models/resnet38_triple_wins.pth.tar --samples 200

A ``.pth.tar`` model is one of the authors' PyTorch checkpoints (``--torch-model``
names its architecture). The dataset follows the model's image shape (28x28x1:
MNIST, eps 0.3; 32x32x3: CIFAR-10, eps 8/255). Prints a Markdown table.
"""

import argparse
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import rdinet_tf  # noqa: E402,F401  (registers the saved model's classes)
from rdinet_tf import attacks, data  # noqa: E402
from rdinet_tf.attacks import autoattack  # noqa: E402
from rdinet_tf.attacks.driver import AttackDriver  # noqa: E402
from rdinet_tf.exits import ExitPolicy  # noqa: E402
from rdinet_lite.errors import InputError  # noqa: E402

DATASETS = {(28, 28, 1): ("mnist", 0.3), (32, 32, 3): ("cifar10", 8 / 255)}
ART_INSTALL = "pip install adversarial-robustness-toolbox==1.20.1"


def load_model(path, torch_model):
    if str(path).endswith(".pth.tar"):
        from rdinet_tf.models.torch_checkpoint import load_torch_checkpoint
        return load_torch_checkpoint(path, torch_model)
    if not Path(path).is_file():
        raise InputError(f"no model at {path}: pass --model DIR/model.keras (or a .pth.tar checkpoint)")
    return keras.models.load_model(path)


def progress(side, name, robust, seconds):
    print(f"{side} {name}: {100 * robust.mean():.1f}% in {seconds:.0f} s", file=sys.stderr, flush=True)


def ranked_classes(logits):
    """Classes of each row from the most to the least likely."""
    return np.argsort(-logits, axis=1, kind="stable")


def exit_only_policy(model, exit_index):
    """An exit policy sending every input to exit ``exit_index``: the exits before it closed (threshold 0), it
    open to any entropy (threshold inf)."""
    thresholds = np.zeros(model.num_exits - 1)
    if exit_index < model.num_exits - 1:
        thresholds[exit_index] = np.inf
    return ExitPolicy(thresholds)


def ours(model, exit_index, images, labels, eps, steps, num_targets, batch_size, seed):
    """Robust mask (N,) after our APGD-CE and after our APGD-T (cumulative over targets) and their seconds.

    The suite's own pieces: its attacks (``autoattack.suite_attack``) run on the survivors batch by batch
    (``autoattack.attack_survivors``) by the attack driver, whose policy answers from the attacked exit.
    """
    driver = AttackDriver(model, exit_only_policy(model, exit_index), batch_size, seed)
    clean = driver.still_correct(images, labels)
    results = {}
    method = autoattack.APGD(eps, steps)
    for name, logit_loss, ranks in (("APGD-CE", attacks.cross_entropy, [0]),
                                    ("APGD-T", None, range(1, num_targets + 1))):
        run = autoattack.suite_attack(model, method, f"exit_{exit_index + 1}", driver.policy, logit_loss,
                                      targeted=logit_loss is None)
        robust, started = clean.copy(), time.perf_counter()
        autoattack.attack_survivors(driver, run, images, labels, robust, ranks)
        results[name] = (robust, time.perf_counter() - started)
        progress("ours", name, *results[name])
    return clean, results


def art_attacks(model, exit_index, images, labels, eps, steps, num_targets, batch_size, seed):
    """Robust mask (N,) after ART's APGD-CE and after its targeted APGD-DLR on the same targets, and seconds."""
    try:
        from art.attacks.evasion import AutoProjectedGradientDescent
        from art.estimators.classification import TensorFlowV2Classifier
    except ImportError as error:
        raise InputError(f"this benchmark needs the Adversarial Robustness Toolbox: {ART_INSTALL}") from error
    exit_model = tf.function(lambda x, training=False: model.exit_logits(x, [exit_index])[0], reduce_retracing=True)
    num_classes = int(model.outputs[exit_index].shape[-1])
    classifier = TensorFlowV2Classifier(
        exit_model, nb_classes=num_classes, input_shape=tuple(images.shape[1:]), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def apgd(loss_type, targeted):
        return AutoProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps,
                                            targeted=targeted, nb_random_init=1, batch_size=batch_size,
                                            loss_type=loss_type, verbose=False)

    def still_correct(x, y):
        return np.argmax(classifier.predict(x, batch_size=batch_size), -1) == y

    def one_hot(y):
        return np.eye(num_classes, dtype=np.float32)[y]

    np.random.seed(seed)  # ART's random start draws from numpy's global generator
    clean = still_correct(images, labels)
    targets = ranked_classes(classifier.predict(images, batch_size=batch_size))
    results = {}
    robust, started = clean.copy(), time.perf_counter()
    indices = np.flatnonzero(robust)
    if indices.size:
        adversarial = apgd("cross_entropy", False).generate(images[indices], one_hot(labels[indices]))
        robust[indices] = still_correct(adversarial, labels[indices])
    results["APGD-CE"] = (robust, time.perf_counter() - started)
    progress("ART", "APGD-CE", *results["APGD-CE"])
    robust, started = clean.copy(), time.perf_counter()
    attack = apgd("difference_logits_ratio", True)
    for rank in range(1, num_targets + 1):
        indices = np.flatnonzero(robust)
        if indices.size:
            adversarial = attack.generate(images[indices], one_hot(targets[indices, rank]))
            robust[indices] = still_correct(adversarial, labels[indices])
    results["APGD-T"] = (robust, time.perf_counter() - started)
    progress("ART", "APGD-T", *results["APGD-T"])
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/mnist/rdi_max_average/model.keras",
                        help="a saved multi-exit model (.keras) or an authors' checkpoint (.pth.tar)")
    parser.add_argument("--torch-model", default="resnet38", help="architecture of a .pth.tar checkpoint")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--samples", type=int, default=1000, help="first test images")
    parser.add_argument("--steps", type=int, default=100, help="APGD iterations")
    parser.add_argument("--exit", type=int, help="1-based exit attacked as a plain classifier (default: the last)")
    parser.add_argument("--eps", type=float, help="L-inf budget (default: 0.3 on MNIST, 8/255 on CIFAR-10)")
    parser.add_argument("--targets", type=int, default=9, help="APGD-T target classes")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0, help="ours: batch i seeded seed + i; ART: numpy's seed")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # ART's compiled forward pass retraces for each batch shape
    if min(args.samples, args.steps, args.targets, args.batch_size) < 1:
        raise InputError("--samples, --steps, --targets and --batch-size must be 1 or more")
    model = load_model(args.model, args.torch_model)
    exit_number = model.num_exits if args.exit is None else args.exit
    if not 1 <= exit_number <= model.num_exits:
        raise InputError(f"--exit must be in 1..{model.num_exits} for this model; got {args.exit}")
    shape = tuple(model.image_shape)
    if shape not in DATASETS:
        raise InputError(f"no test set for images of shape {shape}; known: {sorted(DATASETS)}")
    dataset, default_eps = DATASETS[shape]
    eps = default_eps if args.eps is None else args.eps
    if not 0 < eps <= 1:
        raise InputError(f"--eps must be in (0, 1] (pixels are in [0, 1]); got {eps}")
    num_classes = int(model.outputs[exit_number - 1].shape[-1])
    num_targets = min(args.targets, num_classes - 1)
    splits = data.load(dataset, data_dir=args.data_dir)
    images, labels = splits.x_test[:args.samples], splits.y_test[:args.samples].astype(np.int32)
    settings = (model, exit_number - 1, images, labels, eps, args.steps, num_targets, args.batch_size, args.seed)
    clean, our_results = ours(*settings)
    art_results = art_attacks(*settings)
    print(f"{args.model}, exit {exit_number} of {model.num_exits}, {dataset} ({splits.source}), first {len(labels)} "
          f"test images, eps {eps:.4g}, {args.steps} steps, 1 restart, APGD-T {num_targets} targets; "
          f"clean accuracy {100 * clean.mean():.1f}%\n")
    print("| attack | ours % | ART % | ours - ART (points) | broken by ours only | by ART only | ours s | ART s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("APGD-CE", "APGD-T"):
        (robust, seconds), (art_robust, art_seconds) = our_results[name], art_results[name]
        print(f"| {name} | {100 * robust.mean():.1f} | {100 * art_robust.mean():.1f} "
              f"| {100 * (robust.mean() - art_robust.mean()):+.1f} | {int((art_robust & ~robust).sum())} "
              f"| {int((robust & ~art_robust).sum())} | {seconds:.0f} | {art_seconds:.0f} |")


if __name__ == "__main__":
    main()
