"""Per-sample worst cases of the report and the AutoAttack-style suite, on attacks whose successes are known.

Each stub attack "breaks" a chosen set of samples: it replaces each of their
images with the image of another sample of a different class that the adaptive
model classifies correctly, and returns the other images unchanged. On
clean-correct samples the adaptive model then gets exactly the broken samples
wrong, so every accuracy and worst case of the report has a value known in
advance: per sample, a sample survives only if no attack form broke it.
"""

import json

import numpy as np
import pytest

from rdinet_tf import models
from rdinet_tf import evaluation
from rdinet_tf import attacks
from rdinet_tf.attacks import autoattack
from rdinet_tf.cli import evaluate as evaluate_cli
from rdinet_lite.errors import InputError

COUNT = 20


@pytest.fixture(scope="module")
def samples(digits_model, digits):
    """COUNT test images the adaptive model classifies correctly, their labels and a decoy per sample."""
    images, labels = digits.x_test[:200], digits.y_test[:200]
    right = digits_model.exit_policy.predict(digits_model, images).predictions == labels
    images, labels = images[right][:COUNT], labels[right][:COUNT]
    assert len(labels) == COUNT and len(set(labels.tolist())) > 1
    # decoy of sample i: the image of the next sample (cyclically) of another class, itself classified correctly
    decoys = np.stack([images[next(j % COUNT for j in range(i + 1, i + COUNT) if labels[j % COUNT] != labels[i])]
                       for i in range(COUNT)])
    return images, labels, decoys


class Breaker:
    """Stub attacks: ``breaks[key]`` is the set of sample indices the attack named ``key`` breaks."""

    def __init__(self, samples, breaks):
        images, _, self.decoys = samples
        self.index = {image.tobytes(): i for i, image in enumerate(images)}
        self.breaks = breaks
        self.calls = []

    def apply(self, key, x):
        x = np.array(x)
        for row, image in enumerate(x):
            i = self.index[image.tobytes()]
            if i in self.breaks.get(key, ()):
                x[row] = self.decoys[i]
        self.calls.append((key, len(x)))
        return x


def stub_report_attacks(monkeypatch, breaker):
    """Every attack of the report (accuracy and slowdown forms) breaks ``breaker.breaks[objective]``."""
    def attack_function(model, method, objective, policy=None):
        attacks.check_objective(objective, model.num_exits, policy)
        return lambda x, y, seed: breaker.apply(objective, x)

    monkeypatch.setattr(attacks, "attack_function", attack_function)


def stub_suite(monkeypatch, breaker):
    """Each suite run breaks ``breaker.breaks[(attack, objective, target rank)]`` (rank 0: untargeted)."""
    def suite_attack(model, method, objective, policy, logit_loss, targeted):
        if isinstance(method, autoattack.Square):
            name = "square"
        else:
            name = "apgd-t" if targeted else {attacks.cross_entropy: "apgd-ce",
                                              autoattack.dlr_loss: "apgd-dlr"}[logit_loss]
        return lambda x, y, rank, seed: breaker.apply((name, objective, int(rank)), x)

    monkeypatch.setattr(autoattack, "suite_attack", suite_attack)


REPORT_BREAKS = {"exit_1": {0, 1}, "exit_2": {2, 3}, "average": {1, 4},  # 1 broken twice
                 "slowdown": {5, 6}, "threshold_slowdown": {7}}


def test_per_sample_worst_case_is_the_intersection_of_every_form_slowdown_included(digits_model, samples,
                                                                                     monkeypatch):
    images, labels, _ = samples
    assert digits_model.exit_policy.has_open_side_exit  # the slowdown forms run
    breaker = Breaker(samples, REPORT_BREAKS)
    stub_report_attacks(monkeypatch, breaker)
    report = evaluation.robustness_report(digits_model, images, labels, [attacks.PGD(0.1, 0.05, 1)],
                                        objectives=["exit_1", "exit_2", "average"], batch_size=8,
                                        progress=False)
    assert report.clean.accuracy == 1.0
    accuracies = {r.name.split(" ", 1)[1]: r.accuracy for r in report.attacks + report.slowdown}
    assert accuracies == {key: 1 - len(broken) / COUNT for key, broken in REPORT_BREAKS.items()}
    assert report.worst_case_ata == 1 - 2 / COUNT
    broken = set().union(*REPORT_BREAKS.values())
    assert report.per_sample_worst_case_ata == 1 - len(broken) / COUNT  # 0.6: not the 0.9 of the worst form


SUITE_BREAKS = {("apgd-ce", "exit_1", 0): {8}, ("apgd-dlr", "exit_2", 0): {9, 0},  # 0: also broken by the report
                ("apgd-t", "average", 1): {10}, ("apgd-t", "exit_1", 2): {11}, ("square", "exit_2", 0): {12}}


def test_per_sample_worst_case_with_the_suite_counts_samples_surviving_everything(digits_model, samples,
                                                                                monkeypatch):
    images, labels, _ = samples
    breaker = Breaker(samples, {**REPORT_BREAKS, **SUITE_BREAKS})
    stub_report_attacks(monkeypatch, breaker)
    stub_suite(monkeypatch, breaker)
    suite = autoattack.AutoAttack(0.1, steps=1, queries=1, num_targets=2)
    report = evaluation.robustness_report(digits_model, images, labels, [attacks.PGD(0.1, 0.05, 1)],
                                        objectives=["exit_1", "exit_2", "average"], batch_size=8,
                                        progress=False, autoattack=suite)
    suite_broken = set().union(*SUITE_BREAKS.values())
    assert report.autoattack.robust_samples == sorted(set(range(COUNT)) - suite_broken)
    assert report.autoattack.robust_accuracy == 1 - len(suite_broken) / COUNT  # 0.7
    assert report.per_sample_worst_case_ata == 1 - 8 / COUNT  # 0.6
    every = set().union(*REPORT_BREAKS.values(), suite_broken)
    assert report.per_sample_worst_case_with_autoattack == 1 - len(every) / COUNT  # 0.35, not min(0.6, 0.7)


def test_suite_after_the_report_attacks_only_its_survivors_and_keeps_the_per_sample_worst_case(
        digits_model, samples, monkeypatch):
    images, labels, _ = samples
    breaker = Breaker(samples, {**REPORT_BREAKS, **SUITE_BREAKS})
    stub_report_attacks(monkeypatch, breaker)
    stub_suite(monkeypatch, breaker)
    suite = autoattack.AutoAttack(0.1, steps=1, queries=1, num_targets=2, after_report=True)
    report = evaluation.robustness_report(digits_model, images, labels, [attacks.PGD(0.1, 0.05, 1)],
                                        objectives=["exit_1", "exit_2", "average"], batch_size=8,
                                        progress=False, autoattack=suite)
    report_broken = set().union(*REPORT_BREAKS.values())
    every = report_broken | set().union(*SUITE_BREAKS.values())
    assert report.autoattack.runs[0].attacked == COUNT - len(report_broken)  # 12, not 20
    first_run = sum(size for key, size in breaker.calls if key == ("apgd-ce", "exit_1", 0))  # over its batches
    assert first_run == COUNT - len(report_broken)
    assert report.autoattack.robust_samples == sorted(set(range(COUNT)) - every)
    assert report.autoattack.robust_accuracy == report.per_sample_worst_case_with_autoattack == 1 - len(every) / COUNT
    assert report.autoattack.clean_accuracy == 1.0


def test_suite_after_the_report_is_refused_without_the_report(digits_model, samples):
    images, labels, _ = samples
    with pytest.raises(InputError, match="after_report"):
        autoattack.run_suite(digits_model, images, labels, autoattack.AutoAttack(0.1, after_report=True))


def test_suite_runs_its_default_objectives_every_target_and_only_the_survivors(digits_model, samples,
                                                                               monkeypatch):
    images, labels, _ = samples
    breaks = {("apgd-ce", "routing", 0): {0}, ("apgd-ce", "exit_3", 0): {1, 0},
              ("apgd-dlr", "average", 0): {2}, ("apgd-t", "exit_1", 3): {3}, ("apgd-t", "exit_2", 2): {4},
              ("square", "routing", 0): {5}}
    breaker = Breaker(samples, breaks)
    stub_suite(monkeypatch, breaker)
    result = autoattack.run_suite(digits_model, images, labels, autoattack.AutoAttack(0.2, steps=4, queries=1,
                                                                                     num_targets=3),
                                 batch_size=32)
    default = ["routing", "exit_1", "exit_2", "exit_3", "average"]
    assert [(r.attack, r.objective) for r in result.runs] == [
        (attack, objective) for attack in ("apgd-ce", "apgd-dlr", "apgd-t", "square") for objective in default]
    # APGD-T runs once per target rank 1..3 on each objective, on the samples still correct before it
    targeted = [(objective, rank) for (attack, objective, rank), _ in breaker.calls if attack == "apgd-t"]
    assert targeted == [(objective, rank) for objective in default for rank in (1, 2, 3)]
    broken_so_far = set()
    for run in result.runs:
        assert run.attacked == COUNT - len(broken_so_far)
        broken_so_far |= set().union(*(v for (a, o, _), v in breaks.items() if (a, o) == (run.attack, run.objective)))
        assert run.robust_accuracy == 1 - len(broken_so_far) / COUNT
    assert result.robust_samples == list(range(6, COUNT))
    assert result.checks["square_extra"] == 1 / COUNT  # sample 5, broken only by Square
    assert result.flags["square_beats_gradient"]  # 0.05 > the 0.02 tolerance


@pytest.mark.slow
def test_evaluate_command_line_runs_the_suite(digits_model, tmp_path, capsys):
    model_path, out = tmp_path / "model.keras", tmp_path / "report.json"
    digits_model.save(model_path)
    assert models.load(model_path).exit_policy is not None
    evaluate_cli.main(["--model", str(model_path), "--dataset", "digits", "--samples", "12", "--attacks", "fgsm",
                       "--eps", "0.2", "--objectives", "exit_1,routing", "--autoattack", "--autoattack-steps", "2",
                       "--autoattack-queries", "3", "--autoattack-targets", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    suite = saved["autoattack"]
    assert suite["settings"] == {"eps": 0.2, "steps": 2, "queries": 3, "num_targets": 2, "tolerance": 0.02,
                                 "check_samples": 256, "after_report": False}
    assert [(r["attack"], r["objective"]) for r in suite["runs"]] == [
        (a, o) for a in ("apgd-ce", "apgd-dlr", "apgd-t", "square") for o in ("exit_1", "routing")]
    assert suite["num_samples"] == saved["num_samples"] == 12
    robust = set(suite["robust_samples"])
    assert saved["per_sample_worst_case_with_autoattack"] <= len(robust) / 12
    assert "autoattack robust accuracy" in printed and "with the AutoAttack-style suite too" in printed
