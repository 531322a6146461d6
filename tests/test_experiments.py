"""The experiments layer: ``rdinet-train`` is ``run(RunConfig(...))``, ``rdinet-prune`` is
``prune(PruneConfig(...))``, and each config has its command line's settings."""

import dataclasses
import json

import pytest

from rdinet_tf import experiments
from rdinet_tf.cli import prune, train
from rdinet_tf.experiments import PruneConfig, RunConfig
from rdinet_tf.experiments.run_directory import training_settings
from rdinet_lite import files
from rdinet_lite.errors import InputError

TINY = dict(model="smallcnn", dataset="digits", defense="main", fast=True, epochs=1, steps_per_epoch=2,
            batch_size=32, eval_attack_steps=1, eval_samples=16, eval_objectives="exit_3", quiet=True)
TINY_ARGV = ["--model", "smallcnn", "--dataset", "digits", "--defense", "main", "--fast", "--epochs", "1",
             "--steps-per-epoch", "2", "--batch-size", "32", "--eval-attack-steps", "1", "--eval-samples", "16",
             "--eval-objectives", "exit_3", "--quiet"]


PRUNE = dict(model="source.keras", out="pruned", target_sparsity=0.5)
PRUNE_ARGV = ["--model", "source.keras", "--out", "pruned", "--target-sparsity", "0.5"]


@pytest.mark.parametrize("command, config", [(train, RunConfig()), (prune, PruneConfig(**PRUNE))],
                         ids=["train", "prune"])
def test_each_config_has_its_command_lines_settings_defaults_and_choices(command, config):
    assert dataclasses.asdict(config) == vars(command.parse_args(PRUNE_ARGV if command is prune else []))
    fields = {field.name: field for field in dataclasses.fields(config)}
    for action in command.parser()._actions:
        if action.choices is not None:
            assert sorted(action.choices) == sorted(fields[action.dest].metadata["choices"]), action.dest


@pytest.mark.parametrize("command, function, argv, config", [
    (train, "run", [*TINY_ARGV, "--out", "run"], RunConfig(**TINY, out="run")),
    (prune, "prune", PRUNE_ARGV, PruneConfig(**PRUNE)),
], ids=["train", "prune"])
def test_the_command_line_runs_the_config_it_parses(monkeypatch, command, function, argv, config):
    configs = []
    monkeypatch.setattr(experiments, function, lambda config, *args: configs.append(config))
    command.main(argv)
    assert configs == [config]


def test_the_command_line_and_the_function_write_the_same_summary(tmp_path, capsys):
    train.main([*TINY_ARGV, "--out", str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    returned = experiments.run(RunConfig(**TINY, out=tmp_path / "function"))
    assert capsys.readouterr().out == printed.replace(str(tmp_path / "cli"), str(tmp_path / "function"))
    by_cli, by_function = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("cli", "function"))
    assert by_function == json.loads(json.dumps(files.finite_json(returned)))  # NaN written as null
    assert by_function["args"] == {**by_cli["args"], "out": str(tmp_path / "function")}
    for summary in (by_cli, by_function):
        del summary["args"]["out"], summary["train_seconds"]
    assert by_function == by_cli


def test_settings_that_do_not_change_the_training_are_marked_on_the_config():
    assert set(RunConfig.__dataclass_fields__) - set(training_settings(RunConfig())) == {
        "out", "quiet", "overwrite", "restart", "eval_attacks", "eval_objectives", "eval_samples",
        "eval_attack_steps", "calibration", "target_mflops", "adversarial_mflops", "convention",
        "calibration_samples"}
    assert training_settings(RunConfig(out="a", eval_samples=5)) == training_settings(RunConfig(out="b"))
    assert training_settings(RunConfig(epochs=2)) != training_settings(RunConfig())


@pytest.mark.parametrize("settings, message", [
    (dict(model="resnet"), "RunConfig.model must be one of mobilenetv2, resnet38, smallcnn; got 'resnet'"),
    (dict(epochs=0), "RunConfig.epochs must be an integer >= 1; got 0"),
    (dict(batch_size=32.0), "RunConfig.batch_size must be an integer >= 1"),
    (dict(lr=float("nan")), "RunConfig.lr must be a number > 0"),
    (dict(fast="yes"), "RunConfig.fast must be True or False"),
    (dict(seed=2**32), "RunConfig.seed must be an integer in"),
    (dict(out=None), "RunConfig.out must be a path"),
])
def test_a_bad_setting_is_named(settings, message):
    with pytest.raises(InputError, match=message.replace("[", "\\[").replace("(", "\\(")):
        RunConfig(**settings)


def test_a_pruning_config_needs_its_model_its_out_and_one_target():
    with pytest.raises(TypeError, match="model"):
        PruneConfig(out="pruned", target_sparsity=0.5)
    for targets in ({}, dict(target_sparsity=0.5, target_mflops=4.0)):
        with pytest.raises(InputError, match="PruneConfig needs one target: target_mflops .* or target_sparsity"):
            PruneConfig(model="source.keras", out="pruned", **targets)
