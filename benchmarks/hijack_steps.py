"""How strong the exit-hijack attack is at the training attack's single step, against multi-step PGD.

The exit-hijack defense trains on the fast recipe's single-step attack aimed at the exit-hijack objective
(each side exit made confident and wrong while the exits before it stay above their thresholds). For each
model, with its saved thresholds, on the first ``--samples`` test images: the routed accuracy under that
objective and the share of images hijacked (they leave at a side exit with a wrong answer) for

* the recipe's training attack (N-FGSM on CIFAR-10: its perturbation is not projected onto the eps-ball),
* PGD of ``--steps`` steps of 2.5 eps / steps with a random start (Madry et al.'s step rule),
* the evaluation's PGD (PGD-20 at step 2/255 on CIFAR-10, PGD-40 at step 0.01 on MNIST).

If one step hijacks far fewer images than PGD, the training examples rarely show the model what the
evaluation attack does.

    python benchmarks/hijack_steps.py --dataset cifar10 --data-dir ../shared/data \
        benchmarks/models/cifar10_resnet38_{max_average,exit_hijack}.keras
"""

import os
from pathlib import Path

import numpy as np

from rdinet_lite import arguments
from rdinet_lite.errors import InputError
from rdinet_tf import attacks, data, models
from rdinet_tf.experiments import settings


def attack_methods(model, steps):
    """{label: attack method}: the training attack, the scaled PGDs, the evaluation's PGD, with the settings of
    the reference model for ``model``'s images."""
    spec = models.spec_for_images(model.image_shape)
    paper = spec.paper_recipe
    training = spec.fast_recipe.training_attack(paper.eps)
    methods = {f"training attack ({training.name})": training}
    methods.update({f"PGD-{k}, step 2.5 eps / {k}": attacks.scaled_pgd(paper.eps, k) for k in steps})
    methods[f"PGD-{paper.eval_attack_steps} (evaluation)"] = attacks.PGD(
        paper.eps, paper.step_size, paper.eval_attack_steps)
    return methods


def hijack_rows(model, methods, images, labels, batch_size):
    """(label, routed accuracy, share hijacked, share leaving at a side exit, mean L-inf size) per method."""
    driver = attacks.AttackDriver(model, model.exit_policy, batch_size)
    rows = []
    for label, method in {"clean": None, **methods}.items():
        adversarial = images if method is None else driver.attack(
            attacks.attack_function(model, method, "exit_hijack", model.exit_policy), images, labels)
        predictions, exits = driver.adaptive(driver.exit_logits(adversarial))
        wrong, early = predictions != labels, exits < model.num_exits - 1
        size = np.abs(adversarial - images).reshape(len(images), -1).max(axis=1).mean()
        rows.append((label, np.mean(~wrong), np.mean(wrong & early), np.mean(early), size))
    return rows


def step_counts(text):
    """Comma-separated positive step counts."""
    return [arguments.positive_int(k) for k in text.split(",")]


def parser():
    parser = arguments.ArgumentParser(prog="hijack_steps.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="trained RDI models (.keras) with saved thresholds")
    parser.add_argument("--dataset", choices=("cifar10", "mnist"), default="cifar10")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--samples", type=arguments.positive_int, default=500, help="the first N test images")
    parser.add_argument("--steps", type=step_counts, default="1,2,3,5",
                        help="comma-separated step counts of the scaled PGDs (default: 1,2,3,5)")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=250)
    return parser


@arguments.command(parser)
def main(args):
    loaded = {path: models.load(path) for path in args.models}
    for path, model in loaded.items():
        settings.check_dataset(model, args.dataset, path)
        if model.exit_policy is None:
            raise InputError(f"{path} has no saved thresholds: pass a model written by rdinet-train")
    splits = data.load(args.dataset, data_dir=args.data_dir)
    images, labels = splits.x_test[:args.samples], splits.y_test[:args.samples].reshape(-1)
    print(f"# exit-hijack objective, first {len(images)} test images of {args.dataset} ({splits.source}), "
          f"{os.cpu_count()} CPUs; hijacked = leaves at a side exit with a wrong answer")
    print("| model | attack | routed accuracy | hijacked | leaves at a side exit | mean L-inf (x 255) |")
    print("|---|---|---|---|---|---|")
    for path, model in loaded.items():
        for label, accuracy, hijacked, early, size in hijack_rows(
                model, attack_methods(model, args.steps), images, labels, args.batch_size):
            print(f"| {Path(path).stem} | {label} | {accuracy:.1%} | {hijacked:.1%} | {early:.1%} | "
                  f"{255 * size:.1f} |")


if __name__ == "__main__":
    raise SystemExit(main())
