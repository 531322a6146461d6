"""The pruned baseline from one config: ``prune(PruneConfig(...))`` prunes a model's final exit to a cost budget.

The matched comparison for early exit: a static (pruned) single-exit model at
the same average cost as an RDI model. ``target_mflops`` picks the sparsity
that brings the final-exit path's cost to that many MFLOPs (in ``convention``);
``target_sparsity`` sets it directly. The model is pruned and adversarially
fine-tuned (:func:`rdinet_tf.baselines.pruning.prune_final_exit`), then the
unpruned source and the pruned model are evaluated through their final exit
alone: TA on the test split, ATA under PGD on its first ``eval_samples``
images. Writes ``model.keras`` and ``summary.json`` into ``out`` (both or
neither) and prints a table. ``rdinet-prune`` parses its arguments into a
:class:`PruneConfig` and calls :func:`prune`.
"""

import dataclasses
from pathlib import Path

import keras

from rdinet_tf import attacks, data, models
from rdinet_tf.baselines import pruning
from rdinet_tf.experiments.run_directory import MODEL_FILE, SUMMARY_FILE
from rdinet_tf.catalog import TRAINING_ATTACKS
from rdinet_tf.experiments.settings import (check_dataset, check_settings, or_default, paper_recipe_for, setting,
                                            training_attack)
from rdinet_lite import files
from rdinet_lite.accounting import CONVENTIONS
from rdinet_lite.errors import InputError

COST_NOTE = ("MFLOPs of the final-exit path (stages + final head, no side heads): 10^6 conv+dense MACs; "
             "paper: 2^20 conv MACs; pruned model: sparse: non-zero weights only")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """The settings of a pruning run: each is the ``rdinet-prune`` option of the same name (see
    ``rdinet-prune --help``), in the command line's form; ``model`` (a ``model.keras`` written by a training
    run), ``out`` and one of ``target_mflops`` and ``target_sparsity`` are required.
    """

    model: str = setting(dataclasses.MISSING, kind="path")
    dataset: str = setting("mnist", choices=data.DATASETS)
    data_dir: str | None = setting(kind="path")
    out: str = setting(dataclasses.MISSING, kind="path")
    target_mflops: float | None = setting(kind="positive")
    target_sparsity: float | None = setting(kind="number")
    convention: str = setting("honest", choices=CONVENTIONS)
    epochs: int = setting(1, kind="positive_int")
    steps_per_epoch: int | None = setting(kind="positive_int")
    batch_size: int = setting(128, kind="positive_int")
    lr: float = setting(0.01, kind="positive")
    eps: float | None = setting(kind="non_negative")
    step_size: float | None = setting(kind="non_negative")
    attack_steps: int | None = setting(kind="positive_int")
    train_attack: str | None = setting(choices=TRAINING_ATTACKS)
    fast: bool = setting(False, kind="flag")
    eval_attack_steps: int | None = setting(kind="positive_int")
    eval_samples: int = setting(1000, kind="positive_int")
    seed: int = setting(0, kind="seed")
    overwrite: bool = setting(False, kind="flag")
    quiet: bool = setting(False, kind="flag")

    def __post_init__(self):
        check_settings(self)
        if (self.target_mflops is None) == (self.target_sparsity is None):
            raise InputError("PruneConfig needs one target: target_mflops (a cost to reach) or target_sparsity "
                             f"(a fraction of weights to zero); got {self.target_mflops!r} and "
                             f"{self.target_sparsity!r}")


def prune(config):
    """Prune, fine-tune, evaluate and save as ``config`` says; returns the summary."""
    if config.target_sparsity is not None:
        pruning.check_sparsity(config.target_sparsity)
    files.check_output(config.out, inputs=[config.model])  # before Path(""), which is "."
    out = Path(config.out)
    _check_out(out, config)
    with files.lock(out):
        _check_out(out, config)  # as it is now that nobody else writes it
        return _prune(config, out)


def _check_out(out, config):
    files.check_output(out, inputs=[config.model])
    existing = [name for name in (MODEL_FILE, SUMMARY_FILE) if (out / name).exists()]
    if existing and not config.overwrite:
        raise InputError(f"{out} already holds {' and '.join(existing)} (an earlier run's); pass --overwrite to "
                         "replace them or choose another --out")


def _prune(config, out):
    source = models.load(config.model)
    pruning.check_model(source)
    check_dataset(source, config.dataset, config.model)
    sparsity = (config.target_sparsity if config.target_mflops is None
                else pruning.sparsity_for_cost(source, config.target_mflops, config.convention))
    paper = paper_recipe_for(source.image_shape)
    attack = training_attack(config, paper)
    eval_attack = attacks.PGD(attack.eps, or_default(config.step_size, paper.step_size),
                              or_default(config.eval_attack_steps, paper.eval_attack_steps))
    splits = data.load(config.dataset, data_dir=config.data_dir, seed=config.seed)

    keras.utils.set_random_seed(config.seed)
    result = pruning.prune_final_exit(
        source, splits.x_train, splits.y_train, sparsity, attack, epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch, batch_size=config.batch_size, learning_rate=config.lr,
        seed=config.seed)
    samples = min(config.eval_samples, len(splits.x_test))
    rows = {name: pruning.evaluate_final_exit(model, splits, eval_attack, samples, sparse, not config.quiet)
            for name, model, sparse in (("source", source, False), ("pruned", result.model, True))}
    summary = {
        "args": dataclasses.asdict(config),
        "dataset": {"name": config.dataset, "source": splits.source, "train": len(splits.x_train),
                    "test": len(splits.x_test)},
        "convention": config.convention,
        "target_mflops": config.target_mflops,
        "target_sparsity": result.target_sparsity,
        "sparsity": result.sparsity,
        "layer_sparsity": result.layer_sparsity,
        "schedule": result.schedule,
        "fine_tune": {"attack": dataclasses.asdict(attack), "epochs": config.epochs, "steps": result.steps,
                      "batch_size": config.batch_size, "learning_rate": config.lr,
                      "seconds": round(result.seconds, 1), "loss": result.loss},
        "eval_attack": dataclasses.asdict(eval_attack),
        "ata_samples": samples,
        "cost_note": COST_NOTE,
        "source": rows["source"],
        "pruned": rows["pruned"],
    }
    files.publish(out, {MODEL_FILE: result.model.save, SUMMARY_FILE: files.json_writer(summary)},
                  replace=config.overwrite)
    print(table(rows, eval_attack, samples))
    print(f"\nwrote {out / MODEL_FILE} and {out / SUMMARY_FILE}")
    return summary


def table(rows, attack, samples):
    """The source and pruned rows as a printable table."""
    ata = f"ATA ({attack.name}-{attack.steps}, {samples})"
    lines = [f"{'model':<24}{'sparsity':>9}{'TA':>9}{ata:>24}{'MFLOPs':>9}{'paper':>9}"]
    for name, row in rows.items():
        lines.append(f"{name:<24}{row['sparsity']:>9.1%}{row['accuracy']:>9.2%}{row['ata']:>24.2%}"
                     f"{row['mflops']:>9.3f}{row['paper_mflops']:>9.3f}")
    lines.append(f"({COST_NOTE})")
    return "\n".join(lines)
