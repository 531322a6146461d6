"""Command-line help a person can use: fast (no TensorFlow), every default stated, one program name per command;
``python -m`` of every subpackage; the calibrations reachable from the command lines."""

import argparse
import importlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import rdinet_tf
from rdinet_tf import attacks, catalog, data, evaluation, models
from rdinet_tf.architecture import flops
from rdinet_tf.cli import evaluate, export, import_torch, prune, train
from rdinet_tf.exits import ExitPolicy
from rdinet_tf.exits.policy import CALIBRATION_METHODS
from rdinet_tf.experiments import settings
from rdinet_lite.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
COMMANDS = ["rdinet_tf.cli.train", "rdinet_tf.cli.evaluate", "rdinet_tf.cli.export", "rdinet_tf.cli.prune",
            "rdinet_tf.cli.import_torch", "rdinet_lite.bench", "rdinet_lite.edge"]
PARSERS = {"rdinet-train": train.parser, "rdinet-evaluate": evaluate.parser, "rdinet-export": export.parser,
           "rdinet-prune": prune.parser, "rdinet-import-torch": import_torch.parser}

# Options whose value has no default: what to read or write, and budgets that their method requires.
NO_DEFAULT = {"model", "out", "saved_model", "target_mflops", "target_sparsity"}


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_loads_no_tensorflow(module):
    """The package's front door is imported too (``rdinet_tf/__init__.py`` runs first): it must stay light."""
    code = (f"import sys, {module} as command\n"
            "try:\n    command.main(['--help'])\nexcept SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
            "loaded = {'tensorflow', 'keras'} & set(sys.modules)\nassert not loaded, loaded")
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ") and "options:" in result.stdout


def test_every_console_script_names_itself_in_its_usage():
    for script, target in SCRIPTS.items():
        module = importlib.import_module(target.split(":")[0])
        assert module.parser().prog == script, (script, target)


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_every_option_has_plain_help_with_its_default(script):
    parser = PARSERS[script]()
    for text in (parser.description, parser.epilog or ""):
        assert "`" not in text and ":mod:" not in text, text
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[-1]
        assert action.help, f"{script} {name} has no help"
        assert "`" not in action.help, action.help
        assert "preset" not in action.help, action.help
        takes_value = action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if takes_value and not action.required and action.dest not in NO_DEFAULT:
            assert "default" in action.help, f"{script} {name}: {action.help}"
        if action.default not in (None, False) and not isinstance(action.default, bool):
            shown = f"{action.default:g}" if isinstance(action.default, float) else action.default
            assert f"default: {shown}" in action.help, f"{script} {name}: {action.help}"


def test_every_choice_the_command_lines_offer_is_one_the_library_takes():
    """The parsers offer :mod:`rdinet_tf.catalog`'s names: each must name something the library can make."""
    assert tuple(models.MODELS) == catalog.MODELS
    assert all(spec.checkpoint_layout is not None for spec in models.MODELS.values())  # import-torch --model
    assert len(settings.evaluation_attacks(",".join(catalog.EVALUATION_ATTACKS), 0.1, 0.01, 1)) == 4
    with pytest.raises(InputError, match=re.escape(f"choose from {sorted(catalog.EVALUATION_ATTACKS)}")):
        settings.evaluation_attacks("unknown", 0.1, 0.01, 1)
    paper = models.MODELS["smallcnn"].paper_recipe
    made = [settings.training_attack(argparse.Namespace(eps=None, step_size=None, attack_steps=None,
                                                        train_attack=name, fast=False), paper).get_config()["name"]
            for name in catalog.TRAINING_ATTACKS]
    assert made == list(catalog.TRAINING_ATTACKS)
    assert set(catalog.CALIBRATIONS) <= {*CALIBRATION_METHODS, "none"}


def test_help_states_per_model_values():
    text = train.parser().format_help()
    assert "8/255 for resnet38 and mobilenetv2" in " ".join(text.split())
    assert "10 for smallcnn, 15 for resnet38 and mobilenetv2" in " ".join(text.split())


@pytest.mark.parametrize("package", ["architecture", "attacks", "baselines", "cli", "evaluation", "experiments",
                                     "exits", "export", "models", "training"])
def test_every_subpackage_has_a_main(package):
    assert (ROOT / "rdinet_tf" / package / "__main__.py").is_file()


@pytest.mark.parametrize("module", ["rdinet_tf", "rdinet_tf.cli"])
def test_python_m_of_the_package_names_the_commands(module):
    result = _run("-m", module)
    assert result.returncode == 2 and result.stdout == ""
    assert all(script in result.stderr for script in SCRIPTS), result.stderr


def test_python_m_of_a_library_package_names_the_command_in_one_line():
    result = _run("-m", "rdinet_tf.exits")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("rdinet_tf.exits has no command of its own: rdinet-train")


def test_python_m_of_a_package_with_a_command_runs_it():
    result = _run("-m", "rdinet_tf.baselines")
    assert result.returncode == 2
    assert result.stderr.startswith("error: the following arguments are required") and "rdinet-prune --help" in \
        result.stderr


@pytest.mark.parametrize("argv, message", [
    (["--calibration", "target_cost"], "--calibration target_cost needs --target-mflops X"),
    (["--calibration", "robust"], "--calibration robust needs --target-mflops X"),
    (["--target-mflops", "1"], "--target-mflops is the budget of --calibration target_cost or robust"),
    (["--calibration", "target_cost", "--target-mflops", "1", "--calibration-samples", "5"],
     "--calibration-samples set --calibration robust"),
    (["--calibration", "target_cost", "--target-mflops", "0"], "argument --target-mflops: must be > 0"),
])
def test_calibration_options_are_checked_before_any_work(argv, message, cli_error, tmp_path):
    assert message in cli_error(train.main, ["--dataset", "digits", *argv, "--out", str(tmp_path / "run")])
    assert message in cli_error(evaluate.main, ["--model", str(tmp_path / "none.keras"), "--dataset", "digits",
                                                *argv])


def test_evaluate_refuses_the_suite_cascade_without_the_suite(cli_error, tmp_path):
    message = cli_error(evaluate.main, ["--model", str(tmp_path / "none.keras"), "--dataset", "digits",
                                        "--autoattack-after-report"])
    assert "--autoattack-after-report narrows the suite's samples: add --autoattack" in message


@pytest.fixture(scope="module")
def saved_digits_model(digits_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    digits_model.save(path)
    return path


def _middle_cost(model):
    costs = flops.exit_costs(model, "honest")
    return float((costs[0] + costs[-1]) / 2)


EVALUATE_FAST = ["--dataset", "digits", "--samples", "10", "--attack-steps", "1", "--objectives", "exit_1"]


def test_evaluate_calibrates_to_a_target_cost(digits_model, saved_digits_model, digits, tmp_path):
    budget = _middle_cost(digits_model)
    out = tmp_path / "report.json"
    assert evaluate.main(["--model", str(saved_digits_model), *EVALUATE_FAST, "--calibration", "target_cost",
                          "--target-mflops", f"{budget}", "--out", str(out)]) == 0
    expected = ExitPolicy.calibrate(digits_model, digits.x_val, "target_cost", target_cost=budget)
    assert np.allclose(json.loads(out.read_text())["thresholds"], expected.thresholds)
    assert expected.predict(digits_model, digits.x_val).mean_cost <= budget + 1e-6


def test_evaluate_calibrates_for_robustness(digits_model, saved_digits_model, digits, tmp_path):
    budget = _middle_cost(digits_model)
    out = tmp_path / "report.json"
    assert evaluate.main(["--model", str(saved_digits_model), *EVALUATE_FAST, "--calibration", "robust",
                          "--target-mflops", f"{budget}", "--calibration-samples", "20", "--out", str(out)]) == 0
    expected = evaluation.calibrate_robust(digits_model, digits.x_val[:20], digits.y_val[:20],
                                           attacks.PGD(0.3, 0.01, 1), budget, progress=False)
    assert np.allclose(json.loads(out.read_text())["thresholds"], expected.thresholds)


def test_train_calibrates_to_a_target_cost(tmp_path):
    from rdinet_tf import models

    out = tmp_path / "run"
    budget = _middle_cost(models.build("smallcnn"))
    summary = train.run(train.parse_args(["--dataset", "digits", "--fast", "--epochs", "1", "--steps-per-epoch", "1",
                                          "--quiet", "--eval-samples", "5", "--eval-attack-steps", "1",
                                          "--eval-objectives", "exit_1", "--calibration", "target_cost",
                                          "--target-mflops", f"{budget}", "--out", str(out)]))
    model = models.load(out / "model.keras")
    splits = data.load("digits")
    expected = ExitPolicy.calibrate(model, splits.x_val, "target_cost", target_cost=budget)
    assert np.allclose(summary["thresholds"], expected.thresholds)
    assert summary["args"]["calibration"] == "target_cost"


def test_export_writes_the_bundle_with_out_alone(saved_digits_model, tmp_path):
    assert export.main(["--model", str(saved_digits_model), "--out", str(tmp_path / "bundle")]) == 0
    assert (tmp_path / "bundle" / "manifest.json").is_file()


@pytest.mark.slow
def test_any_subpackage_can_be_the_first_import():
    """Each subpackage, reached first through the front door in a fresh interpreter, imports whole: the library's
    own ``from rdinet_tf import ...`` in the middle of it must not load the rest half-made (fresh processes side
    by side)."""
    names = ["architecture", "attacks", "baselines", "data", "evaluation", "exits", "experiments", "export",
             "models", "training"]
    processes = {name: subprocess.Popen([sys.executable, "-c", f"import rdinet_tf as rdi; rdi.{name}"
                                         if name in rdinet_tf.__all__ else f"from rdinet_tf import {name}"],
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name in names}
    failed = {name: p.communicate(timeout=300)[1][-600:] for name, p in processes.items()}
    assert not {name: error for name, error in failed.items() if processes[name].returncode}


def test_the_front_door_loads_the_library_on_first_use():
    """``import rdinet_tf`` alone loads no TensorFlow; its first name loads the library and registers the Keras
    classes; where Keras is imported first, the import itself does (``keras.models.load_model`` after it)."""
    code = ("import sys, rdinet_tf as rdi\n"
            "assert not {'tensorflow', 'keras'} & set(sys.modules)\n"
            "assert 'build' in dir(rdi) and rdi.ExitPolicy.__name__ == 'ExitPolicy'\n"
            "import keras\n"
            "assert 'rdinet_tf>MultiExitModel' in keras.saving.get_custom_objects()\n")
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    result = _run("-c", "import keras, rdinet_tf\n"
                  "assert 'rdinet_tf>MultiExitModel' in keras.saving.get_custom_objects()")
    assert result.returncode == 0, result.stderr
