"""The authors' ResNet-38 RDI-Net checkpoint, imported and measured on CIFAR-10.

Prints per-exit accuracy and, for each exit policy and each input set, the
adaptive accuracy, exit distribution and average cost (paper and honest
MFLOPs). Policies:

* ``held-out equal_share``: ``ExitPolicy.calibrate`` on the validation split
  of ``data.load("cifar10")`` (training images held out).
* ``reference (test calib.)``: the reference's own procedure, equal shares
  calibrated on the test images themselves, without and with its hand
  adjustments for this model (T1..T5 minus 0.15, 0.2, 0.25, 0.05, 0.05).

Input sets: all clean test images, the first ``--attack-samples`` of them, and
PGD-20 (eps 8/255, step 2/255) adversarial versions of that subset for every
single-exit, the average, the max-average and the routing-aware attack (so TA
and ATA compare on the same images). Attacks are made once and routed by every
policy; the routing-aware attack follows the held-out policy's routes.

    python benchmarks/resnet38_checkpoint.py [--data-dir DIR] [--checkpoint FILE]
"""

import argparse
import time
from pathlib import Path

import numpy as np

from tqdm.auto import tqdm

from rdinet_lite.accounting import exit_shares, expected_cost
from rdinet_tf import attacks, data
from rdinet_tf.architecture import flops
from rdinet_tf.attacks.driver import AttackDriver
from rdinet_tf.models.torch_checkpoint import load_torch_checkpoint
from rdinet_tf.exits.policy import ExitPolicy, exit_entropies, predict_exit_logits, thresholds_for_counts

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# The reference's hand adjustments of T1..T5 for the ResNet-38 max-average model (from the authors' code).
REFERENCE_ADJUSTMENT = (0.15, 0.2, 0.25, 0.05, 0.05, 0.0)


def reference_policies(test_logits, num_test):
    """The reference's test-set calibration, raw and with its hand adjustments."""
    entropies = np.asarray(exit_entropies(test_logits))
    num_exits = len(test_logits)
    calibrated = thresholds_for_counts(entropies, [num_test // num_exits] * (num_exits - 1))
    adjusted = np.maximum(calibrated - np.array(REFERENCE_ADJUSTMENT), 0.0)
    return {"reference (test calib.)": ExitPolicy(calibrated),
            "reference (test calib., adjusted)": ExitPolicy(adjusted)}


def input_sets(model, splits, attack_samples, num_objectives, policy):
    """[(label, images, labels)]: clean sets, then PGD-20 (eps 8/255, step 2/255) on the first
    ``attack_samples`` test images for every objective (routing uses ``policy``), in batches of 100
    (batch i seeded i)."""
    x_test, y_test, n = splits.x_test, splits.y_test, attack_samples
    sets = [("clean, all", x_test, y_test), (f"clean, first {n}", x_test[:n], y_test[:n])]
    pgd = attacks.PGD(8 / 255, 2 / 255, 20)
    driver = AttackDriver(model, policy, batch_size=100)
    objectives = [f"exit_{k + 1}" for k in range(model.num_exits)] + ["average", "max_average", "routing"]
    for objective in tqdm(objectives[:num_objectives], desc="PGD-20"):
        adversarial = driver.attack(attacks.attack_function(model, pgd, objective, policy), x_test[:n], y_test[:n])
        sets.append((f"PGD-20 {objective}", adversarial, y_test[:n]))
    return sets


def policy_row(policy, logits, labels, costs):
    """Adaptive accuracy, exit shares and average paper / honest MFLOPs of ``policy``."""
    routed, exits = (np.asarray(t) for t in policy.route(logits))
    shares = exit_shares(exits, len(logits))
    accuracy = float(np.mean(routed.argmax(-1) == labels))
    return accuracy, shares, *(expected_cost(c, shares) for c in costs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(SHARED / "data"))
    parser.add_argument("--checkpoint", default=str(SHARED / "models/resnet38_triple_wins.pth.tar"))
    parser.add_argument("--calibration-samples", type=int, default=5000,
                        help="validation images (held out from training) used to calibrate thresholds")
    parser.add_argument("--attack-samples", type=int, default=1000,
                        help="test images that attacked input sets are computed on")
    parser.add_argument("--objectives", type=int, help="attack only the first N objectives (quick runs)")
    args = parser.parse_args(argv)
    start = time.time()

    model = load_torch_checkpoint(args.checkpoint, "resnet38")
    splits = data.load("cifar10", data_dir=args.data_dir)
    costs = flops.exit_costs(model, "paper"), flops.exit_costs(model, "honest")
    policies = {"held-out equal_share": ExitPolicy.calibrate(model, splits.x_val[:args.calibration_samples])}
    sets = input_sets(model, splits, args.attack_samples, args.objectives, policies["held-out equal_share"])
    # Every exit's logits on every input set, computed once and routed by each policy.
    logits = [predict_exit_logits(model, images) for _, images, _ in sets]
    policies.update(reference_policies(logits[0], len(splits.x_test)))

    print(f"checkpoint: {args.checkpoint}\n")
    print(f"{'exit':<6}{'paper MFLOPs':>14}{'honest MFLOPs':>15}"
          + "".join(f"{'acc ' + label:>22}" for label, _, _ in sets))
    for k in range(model.num_exits):
        print(f"{k + 1:<6}{costs[0][k]:>14.3f}{costs[1][k]:>15.3f}" + "".join(
            f"{np.mean(set_logits[k].argmax(-1) == labels):>22.2%}"
            for set_logits, (_, _, labels) in zip(logits, sets)))

    print("\nthresholds:")
    for name, policy in policies.items():
        print(f"  {name:<36}{np.round(policy.thresholds, 4).tolist()}")

    print(f"\n{'policy':<36}{'inputs':<20}{'accuracy':>9}{'paper MFLOPs':>14}{'honest MFLOPs':>15}"
          "  exit distribution (%)")
    for name, policy in policies.items():
        attacked = []
        for set_logits, (label, _, labels) in zip(logits, sets):
            accuracy, shares, paper_cost, honest_cost = policy_row(policy, set_logits, labels, costs)
            print(f"{name:<36}{label:<20}{accuracy:>9.2%}{paper_cost:>14.2f}{honest_cost:>15.2f}  "
                  + " ".join(f"{100 * s:.1f}" for s in shares))
            if label.startswith("PGD"):
                attacked.append((accuracy, label))
        if attacked:
            print(f"{name:<36}{'worst case':<20}{min(attacked)[0]:>9.2%}  ({min(attacked)[1]})")
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
