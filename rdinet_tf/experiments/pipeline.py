"""A training run from one config: ``run(RunConfig(...))`` trains, calibrates, evaluates and saves.

Trains with the model's reference recipe (every part overridable), calibrates
the exit thresholds on the held-out validation split, evaluates TA / ATA /
MFLOPs on the test split, and writes ``model.keras`` (with its thresholds) and
``summary.json`` into ``out``, together. A run killed at any point and started
again with the same config resumes where it was (see :mod:`.run_directory`).
``rdinet-train`` parses its arguments into a :class:`RunConfig` and calls
:func:`run`; the benchmarks and the tests call it directly.
"""

import dataclasses
import math
import time

import keras
import tensorflow as tf

from rdinet_tf import attacks, data, evaluation, models
from rdinet_tf.architecture import flops
from rdinet_tf.experiments.run_directory import MODEL_FILE, SUMMARY_FILE, RunDirectory
from rdinet_tf.catalog import (CALIBRATIONS, DEFENSES, POLICY_DEFENSES, PRECISIONS, RECIPES, STRATEGIES,
                               TRAINING_ATTACKS)
from rdinet_tf.experiments.settings import (calibrated_policy, check_calibration, check_dataset_shape, check_settings,
                                            evaluation_attacks, objectives, or_default, setting, training_attack)
from rdinet_tf.training import FollowThresholds, check_exit_weights, paper_optimizer, precision_scope
from rdinet_tf.training.distillation import NeoKD
from rdinet_tf.training.guard import GUARD_SAMPLES, CatastrophicOverfittingGuard, guard_attack
from rdinet_tf.training.placement import place
from rdinet_lite.accounting import CONVENTIONS
from rdinet_lite.errors import InputError

POLICY_CALIBRATION_SAMPLES = 2000  # validation images the policy-aware defenses calibrate on before each epoch


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """The settings of a training run: each is the ``rdinet-train`` option of the same name (``steps_per_epoch``
    is ``--steps-per-epoch``; see ``rdinet-train --help``), in the command line's form (names and
    comma-separated lists as text; None: the recipe's or the model's default). ``out`` and ``data_dir`` may
    also be :class:`pathlib.Path` objects.

    ``summary.json`` records them under ``args``, the same for a run of the command line and of :func:`run`.
    """

    model: str = setting("smallcnn", choices=models.MODELS)
    recipe: str = setting("paper", choices=RECIPES)
    dataset: str | None = setting(choices=data.DATASETS)
    data_dir: str | None = setting(kind="path")
    defense: str = setting("max_average", choices=DEFENSES)
    epochs: int | None = setting(kind="positive_int")
    steps_per_epoch: int | None = setting(kind="positive_int")
    batch_size: int | None = setting(kind="positive_int")
    distribute: str = setting("none", choices=STRATEGIES)
    cpu_devices: int | None = setting(kind="positive_int")
    precision: str = setting("float32", choices=PRECISIONS)
    lr: float | None = setting(kind="positive")
    guard: bool | None = setting(kind="flag")
    eps: float | None = setting(kind="non_negative")
    step_size: float | None = setting(kind="non_negative")
    attack_steps: int | None = setting(kind="positive_int")
    train_attack: str | None = setting(choices=TRAINING_ATTACKS)
    fast: bool = setting(False, kind="flag")
    eval_attack_steps: int | None = setting(kind="positive_int", training=False)
    slowdown_weight: float = setting(0.0, kind="non_negative")
    slowdown_attack_steps: int | None = setting(kind="positive_int")
    neo_kd: str | None = setting()
    abstention_weight: float | None = setting(kind="non_negative")
    eval_attacks: str = setting("pgd", training=False)
    eval_objectives: str | None = setting(training=False)
    eval_samples: int | None = setting(kind="positive_int", training=False)
    exit_weights: str | None = setting()
    calibration: str = setting("equal_share", choices=CALIBRATIONS, training=False)
    target_mflops: float | None = setting(kind="positive", training=False)
    adversarial_mflops: float | None = setting(kind="positive", training=False)
    convention: str = setting("honest", choices=CONVENTIONS, training=False)
    calibration_samples: int | None = setting(kind="positive_int", training=False)
    seed: int = setting(0, kind="seed")
    out: str = setting("runs/rdinet", kind="path", training=False)
    overwrite: bool = setting(False, kind="flag", training=False)
    restart: bool = setting(False, kind="flag", training=False)
    quiet: bool = setting(False, kind="flag", training=False)

    def __post_init__(self):
        check_settings(self)


def run(config, callbacks=()):
    """Train, calibrate, evaluate and save as ``config`` says; returns the run summary (None on a non-chief worker).

    ``callbacks`` are Keras callbacks added to the training's ``fit``. Every
    setting and the output location are checked before any data is loaded.
    Training runs under ``config.distribute``'s strategy; the chief then
    calibrates and evaluates the saved model on its own.
    """
    spec = models.spec(config.model)
    paper, recipe = spec.paper_recipe, (spec.fast_recipe if config.recipe == "fast" else None)
    dataset = config.dataset or spec.dataset
    check_dataset_shape(spec.input_shape, dataset, f"--model {config.model}")
    if config.slowdown_attack_steps is not None and not config.slowdown_weight > 0:
        raise InputError("--slowdown-attack-steps makes the slowdown defense's examples: "
                         "give it together with --slowdown-weight > 0")
    distillation = _neo_kd(config.neo_kd, config.defense)
    check_calibration(config)
    placement = place(config.distribute, config.cpu_devices)  # checks the request first
    global_batch = or_default(config.batch_size, (recipe or paper).batch_size)
    per_replica_batch = placement.per_replica_batch(global_batch)
    with precision_scope(config.precision):
        keras.utils.set_random_seed(config.seed)
        with placement.strategy.scope():
            model = models.build(config.model, num_classes=data.DATASETS[dataset][1])
        exit_weights = _exit_weights(config.exit_weights, model.num_exits)
        attack = training_attack(config, paper, default=recipe.attack if recipe else "pgd")
        eps, step_size = attack.eps, or_default(config.step_size, paper.step_size)
        eval_steps = or_default(config.eval_attack_steps, paper.eval_attack_steps)
        eval_attacks = evaluation_attacks(config.eval_attacks, eps, step_size, eval_steps)
        eval_objectives = objectives(config.eval_objectives, model.num_exits, "--eval-objectives")
        slowdown_attack = (None if config.slowdown_attack_steps is None else
                           attacks.scaled_pgd(eps, config.slowdown_attack_steps))
        run_directory = RunDirectory(config.out, config, overwrite=config.overwrite, restart=config.restart,
                                     worker=None if placement.is_chief else placement.worker)
        try:
            splits = data.load(dataset, data_dir=config.data_dir, seed=config.seed)
            if len(splits.x_val) == 0:
                raise InputError(f"the validation split of {dataset} ({splits.source}) is empty: training validates "
                                 "and calibrates the exits on it; use a dataset with more training images")
            steps_per_epoch = or_default(config.steps_per_epoch, math.ceil(len(splits.x_train) / global_batch))
            epochs = or_default(config.epochs, recipe.epochs if recipe else math.ceil(paper.iterations /
                                                                                      steps_per_epoch))
            total_steps = epochs * steps_per_epoch
            recipe_summary = _recipe_summary(config, recipe, paper, attack, epochs, total_steps, global_batch)
            if placement.is_chief:
                print(_header(config, dataset, splits, attack, recipe_summary, steps_per_epoch), flush=True)
            guard = (CatastrophicOverfittingGuard(splits.x_val[:GUARD_SAMPLES], splits.y_val[:GUARD_SAMPLES],
                                                  guard_attack(eps), state_dir=run_directory.out, seed=config.seed)
                     if (recipe is not None if config.guard is None else config.guard) else None)
            trained = run_directory.trained_model()  # an earlier run's, if its fit finished
            if trained is None:
                with placement.strategy.scope():
                    optimizer = (recipe.optimizer(total_steps, config.lr) if recipe
                                 else paper_optimizer(paper, total_steps, config.lr))
                    model.compile(optimizer=optimizer, defense=config.defense, attack=attack,
                                  exit_weights=exit_weights, seed=config.seed, slowdown_weight=config.slowdown_weight,
                                  slowdown_attack=slowdown_attack, distillation=distillation,
                                  abstention_weight=config.abstention_weight or 0.0)
                if guard is not None and guard.load_state():  # killed after the guard stopped the run
                    guard.restore_best(model)
                else:
                    # A resumed run continues the input stream where the interrupted one stopped.
                    train_data = data.make_dataset(splits.x_train, splits.y_train, global_batch, shuffle=True,
                                                   augment=paper.augment and dataset == "cifar10", seed=config.seed)
                    train_data = train_data.repeat().skip(run_directory.resumed_epoch() * steps_per_epoch)
                    model.fit(_sharded(train_data, placement), epochs=epochs, steps_per_epoch=steps_per_epoch,
                              shuffle=False,
                              validation_data=_sharded(data.make_dataset(splits.x_val, splits.y_val, 256), placement),
                              callbacks=[*_policy_callbacks(config.defense, splits), *([guard] if guard else []),
                                         *run_directory.callbacks(), _DurationWarning(total_steps), *callbacks],
                              verbose=0 if config.quiet else "auto")
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
            summary = _finish(config, trained, splits, dataset, attack, eval_attacks, eval_objectives, run_directory,
                              attacks.PGD(eps, step_size, eval_steps),
                              {"recipe": recipe_summary,
                               "guard": guard.report() if guard else None,
                               "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": global_batch,
                               "placement": {**placement.to_dict(), "global_batch": global_batch,
                                             "per_replica_batch": per_replica_batch},
                               "precision": config.precision})
            placement.wait_for_all()
            return summary
        finally:
            run_directory.close()


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


def _header(config, dataset, splits, attack, recipe_summary, steps_per_epoch):
    """What a run is about to do, in words: its data, defense, training attack and budget, and what follows."""
    rate = recipe_summary.get("peak_learning_rate", recipe_summary.get("learning_rate"))
    return (f"{config.model} on {dataset} ({splits.source}): {len(splits.x_train):,} training, "
            f"{len(splits.x_val):,} validation, {len(splits.x_test):,} test images\n"
            f"defense {config.defense}, training attack "
            f"{evaluation.describe_attack({'name': attack.name, **dataclasses.asdict(attack)})}\n"
            f"{config.recipe} recipe: {recipe_summary['epochs']} epoch(s) of {steps_per_epoch} steps, batch "
            f"{recipe_summary['batch_size']}, {recipe_summary['schedule']} learning rate {rate:g}\n"
            f"then: exit thresholds ({config.calibration}) from the validation images, TA and ATA on the test "
            "images")


def _recipe_summary(config, recipe, paper, attack, epochs, total_steps, global_batch):
    """The training recipe as run (the recipe's settings with the config's overrides)."""
    summary = {"name": config.recipe, "epochs": epochs, "total_steps": total_steps, "batch_size": global_batch,
               "attack": attack.name}
    if recipe is None:
        return {**summary, "schedule": "step decay", "learning_rate": config.lr or paper.learning_rate,
                "weight_decay": paper.weight_decay}
    return {**summary, "schedule": "one-cycle", "peak_learning_rate": config.lr or recipe.peak_learning_rate,
            "weight_decay": recipe.weight_decay}


def _sharded(dataset, placement):
    """``dataset`` with each worker reading its own share of every batch (``DATA`` sharding)."""
    if placement.workers == 1:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _finish(config, model, splits, dataset, attack, eval_attacks, eval_objectives, run_directory, calibration_attack,
            schedule):
    """Calibrate (``calibration_attack``: the robust method's), evaluate, print and write the outputs of a trained
    ``model``; returns the summary."""
    history, train_seconds = run_directory.history()

    model.exit_policy = calibrated_policy(config, model, splits, calibration_attack, config.seed, not config.quiet)
    thresholds = model.exit_policy.thresholds
    print(f"exit thresholds ({config.calibration}): "
          + ", ".join(f"exit {k + 1} {float(t):.3g}" for k, t in enumerate(thresholds))
          + f"; exit {len(thresholds) + 1} answers the rest")
    report = evaluation.evaluate_splits(model, splits, eval_attacks, config.eval_samples, seed=config.seed,
                                        objectives=eval_objectives, progress=not config.quiet)
    clean = model.exit_policy.predict(model, splits.x_test)
    summary = {
        "args": dataclasses.asdict(config),
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
