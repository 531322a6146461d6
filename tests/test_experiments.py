"""The experiments layer: ``rdinet-train`` is ``run(RunConfig(...))``, and the config is the command line's."""

import dataclasses
import json

import pytest

from rdinet_tf import experiments
from rdinet_tf.cli import train
from rdinet_tf.experiments import RunConfig
from rdinet_tf.experiments.run_directory import training_settings
from rdinet_lite.errors import InputError

TINY = dict(model="smallcnn", dataset="digits", defense="main", fast=True, epochs=1, steps_per_epoch=2,
            batch_size=32, eval_attack_steps=1, eval_samples=16, eval_objectives="exit_3", quiet=True)
TINY_ARGV = ["--model", "smallcnn", "--dataset", "digits", "--defense", "main", "--fast", "--epochs", "1",
             "--steps-per-epoch", "2", "--batch-size", "32", "--eval-attack-steps", "1", "--eval-samples", "16",
             "--eval-objectives", "exit_3", "--quiet"]


def test_the_config_has_the_command_lines_settings_defaults_and_choices():
    assert dataclasses.asdict(RunConfig()) == vars(train.parse_args([]))
    fields = {field.name: field for field in dataclasses.fields(RunConfig)}
    for action in train.parser()._actions:
        if action.choices is not None:
            assert sorted(action.choices) == sorted(fields[action.dest].metadata["choices"]), action.dest


def test_the_command_line_runs_the_config_it_parses(tmp_path, monkeypatch):
    configs = []
    monkeypatch.setattr(experiments, "run", lambda config, callbacks=(): configs.append(config))
    train.main([*TINY_ARGV, "--out", str(tmp_path / "run")])
    assert configs == [RunConfig(**TINY, out=str(tmp_path / "run"))]


def test_the_command_line_and_the_function_write_the_same_summary(tmp_path, capsys):
    train.main([*TINY_ARGV, "--out", str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    returned = experiments.run(RunConfig(**TINY, out=tmp_path / "function"))
    assert capsys.readouterr().out == printed.replace(str(tmp_path / "cli"), str(tmp_path / "function"))
    by_cli, by_function = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("cli", "function"))
    assert by_function == json.loads(json.dumps(returned))
    assert by_function["args"] == {**by_cli["args"], "out": str(tmp_path / "function")}
    for summary in (by_cli, by_function):
        del summary["args"]["out"], summary["train_seconds"]
    assert by_function == by_cli


def test_settings_that_do_not_change_the_training_are_marked_on_the_config():
    assert set(RunConfig.__dataclass_fields__) - set(training_settings(RunConfig())) == {
        "out", "quiet", "overwrite", "restart", "eval_attacks", "eval_objectives", "eval_samples",
        "eval_attack_steps", "calibration"}
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
