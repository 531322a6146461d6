"""Train an RDI-Net: ``python -m rdinet_tf.train --model smallcnn --dataset mnist --defense max_average``.

Trains with the model's reference recipe (spec section 2; every part
overridable), calibrates the exit thresholds on the held-out validation split,
evaluates TA / ATA / MFLOPs on the test split, and writes into ``--out``:
``model.keras`` (with its thresholds) and ``summary.json``. An interrupted run
started again with the same ``--out`` resumes from its last finished epoch.
"""

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import keras

from rdinet_tf import attacks, data, evaluate, files, flops, models
from rdinet_tf.errors import InputError
from rdinet_tf.policy import ExitPolicy
from rdinet_tf.training import DEFENSES, PRESETS, preset_optimizer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rdinet_tf.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(PRESETS), default="smallcnn")
    parser.add_argument("--dataset", choices=sorted(data.DATASETS),
                        help="default: the model's preset dataset (mnist or cifar10)")
    parser.add_argument("--data-dir", help="local data directory (else tfds or $RDINET_DATA_DIR)")
    parser.add_argument("--defense", choices=DEFENSES, default="max_average")
    parser.add_argument("--fast", action="store_true",
                        help="train with FGSM, random start, step 1.25 eps instead of PGD (CPU budget)")
    parser.add_argument("--epochs", type=int, help="default: the preset's iterations (full paper schedule)")
    parser.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training split")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="base learning rate (default: preset)")
    parser.add_argument("--eps", type=float)
    parser.add_argument("--step-size", type=float)
    parser.add_argument("--attack-steps", type=int, help="training attack steps")
    parser.add_argument("--slowdown-weight", type=float, default=0.0,
                        help="weight of the slowdown defense term: side-exit CE on slowdown examples "
                        "made with the training attack (default 0: off)")
    parser.add_argument("--slowdown-attack-steps", type=int,
                        help="make the slowdown examples with PGD of this many steps (step 2.5 eps / steps) "
                        "instead of the training attack")
    parser.add_argument("--eval-attack-steps", type=int, help="evaluation PGD steps (default: preset)")
    parser.add_argument("--eval-attacks", default="pgd", help="comma-separated: pgd,fgsm,wrm,noise")
    parser.add_argument("--eval-objectives", help="comma-separated attack objectives "
                        "(default: every exit, average, max_average, routing)")
    parser.add_argument("--eval-samples", type=int, help="attack the first N test images (default: all)")
    parser.add_argument("--exit-weights", help="comma-separated loss weight per exit (default all 1); "
                        "e.g. 0,0,1 trains a single-exit baseline")
    parser.add_argument("--calibration", default="equal_share", choices=["equal_share", "none"],
                        help="thresholds from the validation split; none: no early exit (all thresholds 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/rdinet", help="output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def run(args, callbacks=()):
    """Train, calibrate, evaluate and save as ``args`` says; returns the run summary."""
    preset = PRESETS[args.model]
    dataset = args.dataset or preset.dataset
    expected_shape = models.MODELS[args.model][1]
    if data.DATASETS[dataset][0] != expected_shape:
        raise InputError(f"--model {args.model} takes {expected_shape} images but {dataset} has "
                         f"{data.DATASETS[dataset][0]}; pick a matching --dataset")
    if args.slowdown_attack_steps is not None:
        if args.slowdown_attack_steps < 1:
            raise InputError(f"--slowdown-attack-steps must be 1 or more; got {args.slowdown_attack_steps}")
        if not args.slowdown_weight > 0:
            raise InputError("--slowdown-attack-steps makes the slowdown defense's examples: "
                             "give it together with --slowdown-weight > 0")
    keras.utils.set_random_seed(args.seed)
    splits = data.load(dataset, data_dir=args.data_dir, seed=args.seed)
    batch_size = args.batch_size or preset.batch_size
    steps_per_epoch = args.steps_per_epoch or math.ceil(len(splits.x_train) / batch_size)
    epochs = args.epochs or math.ceil(preset.iterations / steps_per_epoch)
    eps = preset.eps if args.eps is None else args.eps
    step_size = args.step_size or preset.step_size
    attack = (attacks.fast_fgsm(eps) if args.fast
              else attacks.PGD(eps, step_size, args.attack_steps or preset.train_attack_steps))

    slowdown_attack = (None if args.slowdown_attack_steps is None else
                       attacks.PGD(eps, 2.5 * eps / args.slowdown_attack_steps, args.slowdown_attack_steps))

    model = models.build(args.model, num_classes=splits.num_classes)
    exit_weights = args.exit_weights and [float(w) for w in args.exit_weights.split(",")]
    model.compile(optimizer=preset_optimizer(preset, epochs * steps_per_epoch, args.lr),
                  defense=args.defense, attack=attack, exit_weights=exit_weights, seed=args.seed,
                  slowdown_weight=args.slowdown_weight, slowdown_attack=slowdown_attack)
    train_data = data.make_dataset(splits.x_train, splits.y_train, batch_size, shuffle=True,
                                   augment=preset.augment and dataset == "cifar10", seed=args.seed).repeat()
    out = Path(args.out)
    started = time.time()
    history = model.fit(
        train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False,
        validation_data=data.make_dataset(splits.x_val, splits.y_val, 256),
        callbacks=[keras.callbacks.BackupAndRestore(str(out / "backup")), *callbacks],
        verbose=0 if args.quiet else "auto",
    )
    train_seconds = time.time() - started

    model.exit_policy = (ExitPolicy([0.0] * (model.num_exits - 1)) if args.calibration == "none"
                         else ExitPolicy.calibrate(model, splits.x_val, method=args.calibration))
    files.save_model(model, out / "model.keras")
    report = evaluate.evaluate_splits(
        model, splits, args.eval_attacks.split(","), eps, step_size,
        args.eval_attack_steps or preset.eval_attack_steps, args.eval_samples, seed=args.seed,
        objectives=args.eval_objectives and args.eval_objectives.split(","), progress=not args.quiet)
    clean = model.exit_policy.predict(model, splits.x_test)
    summary = {
        "args": vars(args),
        "dataset": {"name": dataset, "source": splits.source, "train": len(splits.x_train),
                    "validation": len(splits.x_val), "test": len(splits.x_test)},
        "attack": dataclasses.asdict(attack),
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size,
        "train_seconds": round(train_seconds, 1),
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "exit_costs": {c: flops.exit_costs(model, c).tolist() for c in flops.CONVENTIONS},
        "thresholds": model.exit_policy.thresholds.tolist(),
        "test_clean": {"samples": len(splits.x_test), "accuracy": clean.accuracy(splits.y_test),
                       "mflops": clean.mean_cost, "exit_shares": clean.exit_shares.tolist(),
                       "paper_mflops": float(flops.exit_costs(model, "paper")[clean.exits].mean())},
        "report": report.to_dict(),
    }
    files.write_json(out / "summary.json", summary)
    print(flops.cost_table(model, report.clean.exit_shares))
    print()
    print(report.table())
    print(f"\nwrote {out / 'model.keras'} and {out / 'summary.json'}")
    return summary


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except (InputError, OSError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
