"""Train an RDI-Net: ``rdinet-train --model smallcnn --dataset mnist --defense max_average``.

Trains with the model's reference recipe (every part overridable),
calibrates the exit thresholds on the held-out validation split, evaluates TA
/ ATA / MFLOPs on the test split, and writes ``model.keras`` (with its
thresholds) and ``summary.json`` into ``--out``, together. A run killed at
any point and started again with the same arguments resumes where it was
(see :mod:`rdinet_tf.experiments.run_directory`).
"""

import argparse
import dataclasses
import math
import time

import keras
import tensorflow as tf

from rdinet_tf import data, models
from rdinet_tf.training.placement import STRATEGIES, place
from rdinet_tf import evaluation
from rdinet_tf.architecture import flops
from rdinet_lite.accounting import CONVENTIONS
from rdinet_tf import attacks
from rdinet_tf.cli import common
from rdinet_lite import arguments
from rdinet_tf.experiments.run_directory import MODEL_FILE, SUMMARY_FILE, RunDirectory
from rdinet_tf.training.distillation import NeoKD
from rdinet_lite.errors import InputError
from rdinet_tf.training.guard import GUARD_SAMPLES, CatastrophicOverfittingGuard, guard_attack
from rdinet_tf.exits.policy import ExitPolicy
from rdinet_tf.training import (DEFENSES, POLICY_DEFENSES, PRECISIONS, RECIPES, FollowThresholds, check_exit_weights,
                                paper_optimizer, precision_scope)

POLICY_CALIBRATION_SAMPLES = 2000  # validation images the policy-aware defenses calibrate on before each epoch


def parser():
    parser = arguments.ArgumentParser(prog="rdinet-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(models.MODELS), default="smallcnn",
                        help="reference architecture (default smallcnn)")
    parser.add_argument("--recipe", choices=RECIPES, default="paper",
                        help="training recipe: paper (default), the reference's PGD schedule for --model; fast, "
                        "time-to-robust-accuracy training (single-step attack, one-cycle learning rate, the "
                        "catastrophic-overfitting guard; hours, not days, for a CIFAR-10 ResNet-38 on 2 CPU "
                        "cores). Every setting below overrides the recipe's")
    common.add_data_arguments(parser, required=False, help="default: the model's dataset (mnist or cifar10)")
    parser.add_argument("--defense", choices=DEFENSES, default="max_average",
                        help="training attack objective: the paper's main, average, max_average (default), or one "
                        "that knows the exit policy: routing, exit_hijack, worst_case; none: clean training")
    parser.add_argument("--epochs", type=arguments.positive_int,
                        help="default: the paper's iterations (full schedule) or the fast recipe's epochs")
    parser.add_argument("--steps-per-epoch", type=arguments.positive_int,
                        help="default: one pass over the training split")
    parser.add_argument("--batch-size", type=arguments.positive_int,
                        help="global batch, split evenly over the replicas (default: the recipe's)")
    parser.add_argument("--distribute", choices=STRATEGIES, default="none",
                        help="tf.distribute strategy: mirrored (local GPUs, or --cpu-devices), multi_worker "
                        "(MultiWorkerMirroredStrategy from TF_CONFIG; run the command on every worker)")
    parser.add_argument("--cpu-devices", type=arguments.positive_int,
                        help="with --distribute mirrored: mirror over N logical CPU devices (for testing)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="compute precision of the model's layers (mixed: variables stay float32); attacks and "
                        "losses compute in float32")
    parser.add_argument("--lr", type=arguments.positive_float,
                        help="base learning rate (paper) or the one-cycle peak (fast) (default: the recipe's)")
    parser.add_argument("--guard", action=argparse.BooleanOptionalAction,
                        help="the catastrophic-overfitting guard: after each epoch, PGD accuracy of every exit on "
                        "held-out images; stops and restores the best epoch when it collapses (default: on with "
                        "--recipe fast, off with paper)")
    common.add_attack_arguments(parser, training=True)
    parser.add_argument("--slowdown-weight", type=arguments.non_negative_float, default=0.0,
                        help="weight of the slowdown defense term: side-exit CE on slowdown examples "
                        "made with the training attack (default 0: off)")
    parser.add_argument("--slowdown-attack-steps", type=arguments.positive_int,
                        help="make the slowdown examples with PGD of this many steps (step 2.5 eps / steps) "
                        "instead of the training attack")
    parser.add_argument("--neo-kd", metavar="NKD,EOKD",
                        help="add NEO-KD's distillation terms with these weights (neighbour, exit-wise orthogonal; "
                        "e.g. 1,1) on the defense's adversarial batch")
    parser.add_argument("--abstention-weight", type=arguments.non_negative_float,
                        help="weight of the abstention term: side exits learn to stay uncertain on the adversarial "
                        "inputs they get wrong, so an attacker cannot make an early exit leave with a wrong answer "
                        "(default 0: off)")
    parser.add_argument("--eval-attacks", default="pgd", help="comma-separated: pgd,fgsm,wrm,noise")
    parser.add_argument("--eval-objectives", help="comma-separated attack objectives "
                        "(default: every exit, average, max_average, routing, exit_hijack)")
    parser.add_argument("--eval-samples", type=arguments.positive_int, help="attack the first N test images "
                        "(default: all)")
    parser.add_argument("--exit-weights", help="comma-separated loss weight per exit (default all 1); "
                        "e.g. 0,0,1 trains a single-exit baseline")
    parser.add_argument("--calibration", default="equal_share", choices=["equal_share", "none"],
                        help="thresholds from the validation split; none: no early exit (all thresholds 0)")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="random seed, in [0, 2**32) (default 0)")
    parser.add_argument("--out", default="runs/rdinet", help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--restart", action="store_true",
                        help="discard an unfinished run in --out (its backup and progress) and train anew")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv=None):
    return parser().parse_args(argv)


def _exit_weights(text, num_exits):
    if text is None:
        return None
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise InputError(f"--exit-weights must be comma-separated numbers, one per exit; got {text!r}") from None
    return check_exit_weights(weights, num_exits)


def _neo_kd(text, defense):
    if text is None:
        return None
    if defense == "none":
        raise InputError("--neo-kd distils onto the adversarial batch: give it with a --defense other than none")
    try:
        neighbour, orthogonal = (float(w) for w in text.split(","))
    except ValueError:
        raise InputError(f"--neo-kd must be two comma-separated weights NKD,EOKD (e.g. 1,1); got {text!r}") from None
    return NeoKD(neighbour, orthogonal)


def run(args, callbacks=()):
    """Train, calibrate, evaluate and save as ``args`` says; returns the run summary (None on a non-chief worker).

    Every argument and the output location are checked before any data is
    loaded. Training runs under ``--distribute``'s strategy; the chief then
    calibrates and evaluates the saved model on its own.
    """
    spec = models.spec(args.model)
    paper, recipe = spec.paper_recipe, (spec.fast_recipe if args.recipe == "fast" else None)
    dataset = args.dataset or spec.dataset
    common.check_dataset_shape(spec.input_shape, dataset, f"--model {args.model}")
    if args.slowdown_attack_steps is not None and not args.slowdown_weight > 0:
        raise InputError("--slowdown-attack-steps makes the slowdown defense's examples: "
                         "give it together with --slowdown-weight > 0")
    distillation = _neo_kd(args.neo_kd, args.defense)
    placement = place(args.distribute, args.cpu_devices)  # checks the request first
    global_batch = common.or_default(args.batch_size, (recipe or paper).batch_size)
    per_replica_batch = placement.per_replica_batch(global_batch)
    with precision_scope(args.precision):
        keras.utils.set_random_seed(args.seed)
        with placement.strategy.scope():
            model = models.build(args.model, num_classes=data.DATASETS[dataset][1])
        exit_weights = _exit_weights(args.exit_weights, model.num_exits)
        attack = common.training_attack(args, paper, default=recipe.attack if recipe else "pgd")
        eps, step_size = attack.eps, common.or_default(args.step_size, paper.step_size)
        eval_attacks = common.evaluation_attacks(args.eval_attacks, eps, step_size,
                                                 common.or_default(args.eval_attack_steps, paper.eval_attack_steps))
        eval_objectives = common.objectives(args.eval_objectives, model.num_exits, "--eval-objectives")
        slowdown_attack = (None if args.slowdown_attack_steps is None else
                           attacks.scaled_pgd(eps, args.slowdown_attack_steps))
        run_directory = RunDirectory(args.out, args, overwrite=args.overwrite, restart=args.restart,
                                     worker=None if placement.is_chief else placement.worker)
        try:
            splits = data.load(dataset, data_dir=args.data_dir, seed=args.seed)
            if len(splits.x_val) == 0:
                raise InputError(f"the validation split of {dataset} ({splits.source}) is empty: training validates "
                                 "and calibrates the exits on it; use a dataset with more training images")
            steps_per_epoch = common.or_default(args.steps_per_epoch, math.ceil(len(splits.x_train) / global_batch))
            epochs = common.or_default(args.epochs, recipe.epochs if recipe else math.ceil(paper.iterations /
                                                                                           steps_per_epoch))
            total_steps = epochs * steps_per_epoch
            guard = (CatastrophicOverfittingGuard(splits.x_val[:GUARD_SAMPLES], splits.y_val[:GUARD_SAMPLES],
                                                  guard_attack(eps), state_dir=run_directory.out, seed=args.seed)
                     if (recipe is not None if args.guard is None else args.guard) else None)
            trained = run_directory.trained_model()  # an earlier run's, if its fit finished
            if trained is None:
                with placement.strategy.scope():
                    optimizer = (recipe.optimizer(total_steps, args.lr) if recipe
                                 else paper_optimizer(paper, total_steps, args.lr))
                    model.compile(optimizer=optimizer, defense=args.defense, attack=attack, exit_weights=exit_weights,
                                  seed=args.seed, slowdown_weight=args.slowdown_weight, slowdown_attack=slowdown_attack,
                                  distillation=distillation, abstention_weight=args.abstention_weight or 0.0)
                if guard is not None and guard.load_state():  # killed after the guard stopped the run
                    guard.restore_best(model)
                else:
                    # A resumed run continues the input stream where the interrupted one stopped.
                    train_data = data.make_dataset(splits.x_train, splits.y_train, global_batch, shuffle=True,
                                                   augment=paper.augment and dataset == "cifar10", seed=args.seed)
                    train_data = train_data.repeat().skip(run_directory.resumed_epoch() * steps_per_epoch)
                    model.fit(_sharded(train_data, placement), epochs=epochs, steps_per_epoch=steps_per_epoch,
                              shuffle=False,
                              validation_data=_sharded(data.make_dataset(splits.x_val, splits.y_val, 256), placement),
                              callbacks=[*_policy_callbacks(args.defense, splits), *([guard] if guard else []),
                                         *run_directory.callbacks(), _DurationWarning(total_steps), *callbacks],
                              verbose=0 if args.quiet else "auto")
                run_directory.save_trained(model)
            if not placement.is_chief:
                run_directory.finish_worker()
                print(f"worker {placement.worker}: training done; the chief writes the outputs")
                placement.wait_for_all()
                return None
            if trained is None:
                trained = run_directory.trained_model()  # loaded outside the strategy: the chief evaluates alone
            if guard is not None:
                guard.load_state()  # where it acted, also when an earlier run trained
            summary = _finish(args, trained, splits, dataset, attack, eval_attacks, eval_objectives, run_directory,
                              {"recipe": _recipe_summary(args, recipe, paper, attack, epochs, total_steps,
                                                         global_batch),
                               "guard": guard.report() if guard else None,
                               "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": global_batch,
                               "placement": {**placement.to_dict(), "global_batch": global_batch,
                                                "per_replica_batch": per_replica_batch},
                               "precision": args.precision})
            placement.wait_for_all()
            return summary
        finally:
            run_directory.close()


class _DurationWarning(keras.callbacks.Callback):
    """Says once, from the speed of the first training steps, how long a run of an hour or more will take."""

    def __init__(self, total_steps, seconds=3600):
        super().__init__()
        self.total_steps, self.seconds, self._times = total_steps, seconds, []

    def on_train_batch_end(self, batch, logs=None):
        if len(self._times) < 4:
            self._times.append(time.perf_counter())  # the first step traces: time steps 2 to 4
            if len(self._times) == 4:
                estimate = (self._times[-1] - self._times[1]) / 2 * self.total_steps
                if estimate >= self.seconds:
                    print(f"note: at the speed of its first steps this training takes about {estimate / 3600:.1f} "
                          f"hours ({self.total_steps} steps); a resumed run continues where it stopped, and "
                          "--recipe fast or --epochs shortens it", flush=True)


def _policy_callbacks(defense, splits):
    """A policy-aware defense attacks thresholds calibrated on the validation split before each epoch."""
    return [FollowThresholds(splits.x_val[:POLICY_CALIBRATION_SAMPLES])] if defense in POLICY_DEFENSES else []


def _recipe_summary(args, recipe, paper, attack, epochs, total_steps, global_batch):
    """The training recipe as run (the recipe's settings with the command line's overrides)."""
    summary = {"name": args.recipe, "epochs": epochs, "total_steps": total_steps, "batch_size": global_batch,
               "attack": attack.name}
    if recipe is None:
        return {**summary, "schedule": "step decay", "learning_rate": args.lr or paper.learning_rate,
                "weight_decay": paper.weight_decay}
    return {**summary, "schedule": "one-cycle", "peak_learning_rate": args.lr or recipe.peak_learning_rate,
            "weight_decay": recipe.weight_decay}


def _sharded(dataset, placement):
    """``dataset`` with each worker reading its own share of every batch (``DATA`` sharding)."""
    if placement.workers == 1:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _finish(args, model, splits, dataset, attack, eval_attacks, eval_objectives, run_directory, schedule):
    """Calibrate, evaluate, print and write the outputs of a trained ``model``; returns the summary."""
    history, train_seconds = run_directory.history()

    model.exit_policy = (ExitPolicy([0.0] * (model.num_exits - 1)) if args.calibration == "none"
                         else ExitPolicy.calibrate(model, splits.x_val, method=args.calibration))
    report = evaluation.evaluate_splits(model, splits, eval_attacks, args.eval_samples, seed=args.seed,
                                      objectives=eval_objectives, progress=not args.quiet)
    clean = model.exit_policy.predict(model, splits.x_test)
    summary = {
        "args": vars(args),
        "dataset": {"name": dataset, "source": splits.source, "train": len(splits.x_train),
                    "validation": len(splits.x_val), "test": len(splits.x_test)},
        "attack": dataclasses.asdict(attack),
        **schedule,
        "train_seconds": round(train_seconds, 1),
        "history": history,
        "exit_costs": {c: flops.exit_costs(model, c).tolist() for c in CONVENTIONS},
        "thresholds": model.exit_policy.thresholds.tolist(),
        "test_clean": {"samples": len(splits.x_test), "accuracy": clean.accuracy(splits.y_test),
                       "mflops": clean.mean_cost, "exit_shares": clean.exit_shares.tolist(),
                       "paper_mflops": float(flops.exit_costs(model, "paper")[clean.exits].mean())},
        "report": report.to_dict(),
    }
    run_directory.finish(model, summary)
    print(flops.cost_table(model, report.clean.exit_shares))
    print()
    print(report.table())
    print(f"\nwrote {run_directory.out / MODEL_FILE} and {run_directory.out / SUMMARY_FILE}")
    return summary


main = arguments.command(parser)(run)

if __name__ == "__main__":
    raise SystemExit(main())
