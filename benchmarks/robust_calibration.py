"""Robustness-aware threshold calibration against cost-only calibrations at the same cost.

For one RDI model, thresholds from held-out images (the validation split of
``data.load``, never test images) by:

* ``equal_share``: the reference procedure; its average cost on the held-out
  images is the budget of the others;
* ``target_cost``: the cost-only calibration at that budget;
* ``robust``: ``evaluation.calibrate_robust`` at that budget: PGD attacks
  (``--calibration-attack-steps``) on the held-out images for every single
  exit, average and max-average, thresholds maximising their worst-case
  adaptive accuracy within the clean budget;
* ``robust, adversarial budget``: the same, the budget also holding on every
  attacked held-out set.

Each policy is then scored on the first ``--test-samples`` test images with
the paper recipe's evaluation attack (PGD-20 at 8/255 for CIFAR-10, PGD-40 at 0.3
for MNIST) under every attack form, routing-aware and exit hijack included (``evaluation.policy_points``).
With ``--attack-cache DIR`` the same command run again after an interruption makes only the missing attacks.

    python benchmarks/robust_calibration.py --checkpoint ../shared/models/resnet38_triple_wins.pth.tar
    python benchmarks/robust_calibration.py --model runs/mnist/rdi_max_average/model.keras --dataset mnist
"""

import os
import time

import numpy as np

from rdinet_lite import arguments
from rdinet_tf import data, models
from rdinet_tf import evaluation
from rdinet_tf import attacks
from rdinet_tf.models.torch_checkpoint import load_torch_checkpoint
from rdinet_tf.exits.policy import ExitPolicy
from rdinet_tf.experiments import settings


def parser():
    parser = arguments.ArgumentParser(prog="robust_calibration.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a trained rdinet_tf model (.keras)")
    source.add_argument("--checkpoint", help="the authors' ResNet-38 checkpoint (PyTorch), imported")
    parser.add_argument("--dataset", choices=("cifar10", "mnist"), default="cifar10")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--calibration-samples", type=arguments.positive_int, default=1000,
                        help="held-out images to calibrate on")
    parser.add_argument("--calibration-attack-steps", type=arguments.positive_int, default=10)
    parser.add_argument("--test-samples", type=arguments.positive_int, default=1000)
    parser.add_argument("--attack-cache", metavar="DIR",
                        help="keep the attacks in DIR, so that the same command run again after an interruption "
                        "makes only the missing ones; emptied at the end")
    return parser


@arguments.command(parser)
def main(args):
    started = time.perf_counter()
    model = load_torch_checkpoint(args.checkpoint, "resnet38") if args.checkpoint else models.load(args.model)
    settings.check_dataset(model, args.dataset, args.model or args.checkpoint)
    splits = data.load(args.dataset, data_dir=args.data_dir)
    paper = models.spec_for_images(model.image_shape).paper_recipe
    x_cal, y_cal = splits.x_val[:args.calibration_samples], splits.y_val[:args.calibration_samples]
    x_test, y_test = splits.x_test[:args.test_samples], splits.y_test[:args.test_samples]
    calibration_attack = attacks.PGD(paper.eps, paper.step_size, args.calibration_attack_steps)
    test_attack = attacks.PGD(paper.eps, paper.step_size, paper.eval_attack_steps)

    with attacks.attack_cache(args.attack_cache):
        equal_share = ExitPolicy.calibrate(model, x_cal)
        budget = equal_share.predict(model, x_cal).mean_cost
        policies = {"equal_share": equal_share,
                    "target_cost": ExitPolicy.calibrate(model, x_cal, "target_cost", target_cost=budget)}
        for label, adversarial_cost in (("robust", None), ("robust, adversarial budget", budget)):
            try:
                policies[label] = evaluation.calibrate_robust(model, x_cal, y_cal, calibration_attack, budget,
                                                            adversarial_cost=adversarial_cost)
            except ValueError as error:  # InputError: no policy fits the budget
                print(f"# {label}: {error}")
        calibrated = time.perf_counter()
        points = evaluation.policy_points(model, x_test, y_test, test_attack, policies)

    print(f"# {model.name} on {args.dataset} ({splits.source}), {os.cpu_count()} CPUs; budget {budget:.3f} "
          f"honest MFLOPs (equal share on {len(x_cal)} held-out images); calibration attack "
          f"PGD-{calibration_attack.steps} eps {paper.eps:.4g} step {paper.step_size:.4g}; test: first "
          f"{len(x_test)} test images, PGD-{test_attack.steps}, every attack form incl. routing-aware and exit hijack; "
          f"calibration {calibrated - started:.0f} s, test attacks {time.perf_counter() - calibrated:.0f} s")
    print("| policy | thresholds | TA | worst-case ATA | per-sample worst case | MFLOPs honest | MFLOPs paper |")
    print("|---|---|---|---|---|---|---|")
    for point in points:
        print(f"| {point.label} | {np.round(point.thresholds, 3).tolist()} | {100 * point.accuracy:.1f}% | "
              f"{100 * point.worst_case_ata:.1f}% | {100 * point.per_sample_worst_case_ata:.1f}% | "
              f"{point.mflops:.2f} | {point.paper_mflops:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
