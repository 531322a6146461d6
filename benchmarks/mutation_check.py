"""Mutation check: break the library on purpose, one targeted edit at a time, and see which tests catch it.

    nice -n 10 python benchmarks/mutation_check.py [--only NAME ...] [--baseline] [--out FILE]

Each mutant is one source edit (an exact text, found exactly once, replaced) applied to a
temporary copy of the checkout (rdinet_tf/, rdinet_lite/, tests/, device/, notebooks/, setup.py,
pytest.ini); the mutant's own narrow test selection then runs in that copy with
PYTHONPATH pointing at it (subprocesses the tests start import the copy too). A mutant
is caught when pytest reports failing tests (exit code 1); "MISSED" when the selection
passes; "error" for anything else (a collection error is not a catch). ``--baseline``
first runs every selection on an unmodified copy, which must pass. Not collected by
pytest (no test_ prefix); prints a Markdown table and writes it with ``--out``.
"""

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COPIED = ["rdinet_tf", "rdinet_lite", "tests", "device", "notebooks", "setup.py", "pytest.ini"]
TIMEOUT_S = 1800

EPOCH_ONLY_BACKUP = '''

class _EpochOnlyBackup(_AtomicBackup):
    """BackupAndRestore that restores the epoch counter but puts back the fresh weights and optimizer state."""

    def _load_model(self):
        model, optimizer = self.model, self.model.optimizer
        fresh = [v.numpy() for v in model.weights]
        fresh_optimizer = [v.numpy() for v in optimizer.variables] if optimizer is not None and optimizer.built else []
        super()._load_model()
        for variable, value in zip(model.weights, fresh):
            variable.assign(value)
        for variable, value in zip(optimizer.variables if fresh_optimizer else [], fresh_optimizer):
            variable.assign(value)
'''


@dataclasses.dataclass
class Mutant:
    name: str
    row: str  # the deliberate break, as the audit named it
    path: str
    old: str
    new: str
    tests: list
    append: str = ""  # text added at the end of the file


INTERSECTION_TEST = ("tests/test_worst_case.py::"
                     "test_per_sample_worst_case_is_the_intersection_of_every_form_slowdown_included")

MUTANTS = [
    Mutant("chain_tie", "device chain leaves at an exit when entropy equals T_k (< -> <=)",
           "rdinet_lite/runner.py", 'segment.view("entropy")[0] < self._entropy_bounds[index]',
           'segment.view("entropy")[0] <= self._entropy_bounds[index]',
           ["tests/test_export.py::test_device_tie_rule_stays_at_an_exit_whose_entropy_equals_its_threshold"]),
    Mutant("in_graph_tie", "in-graph exit leaves at an exit when entropy equals T_k (< -> <=)",
           "rdinet_tf/export/tflite.py", 'outputs["entropy"][0] < float(thresholds[index])',
           'outputs["entropy"][0] <= float(thresholds[index])',
           ["tests/test_export.py::test_device_tie_rule_stays_at_an_exit_whose_entropy_equals_its_threshold"]),
    Mutant("per_sample_min", "per_sample_worst_case_ata = the minimum over forms",
           "rdinet_tf/evaluation/report.py", "per_sample_worst_case_ata=float(survivors.mean()),",
           "per_sample_worst_case_ata=worst.accuracy,",
           [INTERSECTION_TEST]),
    Mutant("slowdown_survivors", "slowdown attacks left out of the per-sample survivors",
           "rdinet_tf/evaluation/report.py", "            slowdown_results.append(result)\n            survivors &= correct\n",
           "            slowdown_results.append(result)\n",
           [INTERSECTION_TEST]),
    Mutant("autoattack_min", "per_sample_worst_case_with_autoattack = a minimum",
           "rdinet_tf/evaluation/report.py", "survivors[suite.robust_samples].sum() / len(labels))",
           "min(survivors.mean(), suite.robust_accuracy))",
           ["tests/test_worst_case.py::test_per_sample_worst_case_with_the_suite_counts_samples_surviving_everything"]),
    Mutant("suite_one_target", "APGD-T runs only its first target (extra, untested behaviour)",
           "rdinet_tf/attacks/autoattack.py", "range(1, num_targets + 1) if targeted else [0]",
           "range(1, 2) if targeted else [0]",
           ["tests/test_worst_case.py::test_suite_runs_its_default_objectives_every_target_and_only_the_survivors"]),
    Mutant("neo_kd_weights", "NEO-KD's term ignores sample weights",
           "rdinet_tf/training/model.py",
           "distillation_term = self.distillation_loss(labels, clean_logits, adversarial_logits, sample_weight)",
           "distillation_term = self.distillation_loss(labels, clean_logits, adversarial_logits)",
           ["tests/test_keras_contract.py::test_neo_kd_term_of_a_step_is_its_weighted_batch_mean",
            "tests/test_keras_contract.py::test_a_step_with_zero_sample_weights_leaves_the_weights_unchanged"]),
    Mutant("adversarial_metric_weights", "the adversarial accuracy metrics ignore sample weights",
           "rdinet_tf/training/model.py",
           "for metric, logits in zip(self.adversarial, adversarial_logits or []):\n"
           "            metric.update_state(labels, logits, sample_weight=sample_weight)",
           "for metric, logits in zip(self.adversarial, adversarial_logits or []):\n"
           "            metric.update_state(labels, logits)",
           ["tests/test_keras_contract.py::"
            "test_training_metrics_clean_and_adversarial_are_weighted_by_the_sample_weights"]),
    Mutant("robust_returns_start", 'calibrate(method="robust") returns its cost-only start',
           "rdinet_tf/exits/policy.py", "        return cls(robust_thresholds(_exit_outcomes(exit_logits, labels), attacked,",
           "        return cls(starts[0]) if starts else cls(robust_thresholds(_exit_outcomes(exit_logits, labels), attacked,",
           ["tests/test_policy.py::test_robust_calibration_beats_its_cost_only_start_on_a_crafted_model"]),
    Mutant("compare_with_itself", "compare_with_keras compares the bundle with itself",
           "rdinet_tf/export/tflite.py", "    reference = model.exit_policy.predict(model, images)\n",
           "    reference = EarlyExitRunner(bundle_dir, num_threads=num_threads).run_batch(images)\n",
           ["tests/test_export.py::test_compare_with_keras_reports_the_agreement_with_keras_itself"]),
    Mutant("int8_no_float_tail", "int8 export without its float32 softmax/entropy tail",
           "rdinet_tf/export/tflite.py", "denylisted_nodes=sorted(set(float_tail)))", "denylisted_nodes=[])",
           ["tests/test_export.py::test_int8_keeps_the_softmax_entropy_tail_in_float32",
            "tests/test_export.py::test_quantized_agreement_is_measured"]),
    Mutant("resume_epoch_only", "resume restores only the epoch counter",
           "rdinet_tf/experiments/run_directory.py",
           "_AtomicBackup(str(self.backup), double_checkpoint=True)",
           "_EpochOnlyBackup(str(self.backup), double_checkpoint=True)",
           ["tests/test_recipe.py::test_a_killed_and_resumed_run_is_the_uninterrupted_run[1]"],
           append=EPOCH_ONLY_BACKUP),
    Mutant("wrm_no_transport", "WRM without its L2 transport term",
           "rdinet_tf/attacks/attacks.py", "return self.eps * loss_fn(x, y) - transport",
           "return self.eps * loss_fn(x, y)",
           ["tests/test_attacks.py::test_wrm_ascends_the_loss_minus_half_the_squared_l2_transport"]),
    Mutant("random_average_uniform", "random_average with fixed uniform weights",
           "rdinet_tf/attacks/attacks.py", "weights = tf.random.stateless_uniform([model.num_exits], seed)",
           "weights = tf.ones([model.num_exits])",
           ["tests/test_attacks.py::test_random_average_weighs_the_exits_with_random_convex_weights"]),
    Mutant("board_pin", "a board-runtime pin that does not exist (ai-edge-litert==0.0.0.1)",
           "device/README.md", "pip install numpy ai-edge-litert==2.3.0'", "pip install numpy ai-edge-litert==0.0.0.1'",
           ["tests/test_device_runtime.py::test_venv_has_no_tensorflow_or_keras"]),
    # The "also" rows: tests that compared the code with itself now compare it with an oracle.
    Mutant("route_last_confident", "routing takes the last confident exit (predict was compared with route)",
           "rdinet_tf/exits/policy.py", "return ops.min(ops.concatenate([taken,", "return ops.max(ops.concatenate([taken,",
           ["tests/test_policy.py::test_predict_takes_the_exit_and_answer_of_the_rule_computed_in_numpy"]),
    Mutant("runner_thresholds_reversed", "runner applies the thresholds in reverse order (run was compared with "
           "run_batch)", "rdinet_lite/runner.py", "self._entropy_bounds = entropy_bounds(self.thresholds)",
           "self._entropy_bounds = entropy_bounds(self.thresholds[::-1])",
           ["tests/test_runtime.py::test_run_and_run_batch_give_the_keras_early_exit"]),
    Mutant("combine_no_cumsum", "expected latency from per-segment, not cumulative, latencies "
           "(combine_in_venv checked a header)", "rdinet_lite/latency.py",
           "return expected_cost(np.cumsum(latencies), exit_distribution)",
           "return expected_cost(latencies, exit_distribution)",
           ["tests/test_device_runtime.py::test_combine_in_venv"]),
    Mutant("relative_import_upward", "a layer imports from above it through a relative import (test_layout "
           "skipped relative imports)", "rdinet_tf/exits/policy.py", "def predict_exit_logits(",
           "def _upward():\n    from . import evaluate  # noqa: F401\n\n\ndef predict_exit_logits(",
           ["tests/test_layout.py"]),
]


def make_copy(root):
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            shutil.copy2(source, root / name)


def apply(root, mutant):
    path = root / mutant.path
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"{mutant.name}: the text to replace occurs {count} times in {mutant.path}")
    path.write_text(text.replace(mutant.old, mutant.new) + mutant.append)


def run_tests(root, tests):
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    start = time.time()
    try:
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {TIMEOUT_S} s", time.time() - start
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.MULTILINE)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    return result.returncode, (failed[0].split("::", 1)[-1] if failed else summary), time.time() - start


def check_import_location(root):
    """The copy's rdinet_tf is what the tests import (not an installed one)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    where = subprocess.run([sys.executable, "-c", "import rdinet_tf; print(rdinet_tf.__file__)"], cwd=root / "tests",
                           env=env, capture_output=True, text=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(root.resolve()), f"tests would import {where}, not the copy"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="mutant names (default: all)")
    parser.add_argument("--baseline", action="store_true", help="first run every selection unmodified")
    parser.add_argument("--out", help="also write the table (Markdown) here")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    lines = ["| mutant | deliberate break | result | failing test (or pytest summary) | seconds |",
             "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="mutation_") as temporary:
        if args.baseline:
            root = Path(temporary) / "baseline"
            make_copy(root)
            check_import_location(root)
            tests = sorted({t for m in mutants for t in m.tests})
            code, detail, seconds = run_tests(root, tests)
            print(f"baseline: exit code {code}: {detail} ({seconds:.0f} s)", flush=True)
            if code != 0:
                raise SystemExit("the unmodified copy fails its selections: fix that first")
        for mutant in mutants:
            root = Path(temporary) / mutant.name
            make_copy(root)
            apply(root, mutant)
            code, detail, seconds = run_tests(root, mutant.tests)
            verdict = {1: "caught", 0: "MISSED"}.get(code, "error")
            line = f"| {mutant.name} | {mutant.row} | {verdict} | {detail} | {seconds:.0f} |"
            print(line, flush=True)
            lines.append(line)
            shutil.rmtree(root, ignore_errors=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        command = " ".join(["nice -n 10 python benchmarks/mutation_check.py", *sys.argv[1:]])
        Path(args.out).write_text(f"Command: {command}\n\n{table}\n")
    return 0 if all("| caught |" in line for line in lines[2:]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
