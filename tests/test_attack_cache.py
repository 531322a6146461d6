"""The attack cache: an interrupted evaluation run again makes only the missing attacks, with the same result."""

import dataclasses
import json

import pytest
import tensorflow as tf

from rdinet_lite.errors import InputError
from rdinet_tf import attacks, evaluation, models
from rdinet_tf.attacks import autoattack
from rdinet_tf.cli import evaluate as evaluate_cli
from rdinet_tf.exits.policy import ExitPolicy

OBJECTIVES = ["exit_1", "exit_2", "routing"]
BATCH = 8


class Interrupted(Exception):
    pass


@pytest.fixture
def counted_attacks(monkeypatch):
    """Count the attacked batches; ``counted.stop_after = n`` interrupts the evaluation at batch n + 1."""
    real = attacks.attack_function

    class Counted:
        batches, stop_after = 0, None

    def attack_function(*args, **kwargs):
        attack = real(*args, **kwargs)

        def run(x, y, seed):
            if Counted.stop_after is not None and Counted.batches >= Counted.stop_after:
                raise Interrupted
            Counted.batches += 1
            return attack(x, y, seed)

        return run

    monkeypatch.setattr(attacks, "attack_function", attack_function)
    return Counted


def _report(model, digits, **kwargs):
    images, labels = digits.x_test[:24], digits.y_test[:24]
    return evaluation.robustness_report(model, images, labels, [attacks.fgsm(0.2)], objectives=OBJECTIVES,
                                        slowdown=False, batch_size=BATCH, progress=False, **kwargs).to_dict()


def test_an_interrupted_report_run_again_makes_only_the_missing_attacks(digits_model, digits, counted_attacks,
                                                                        tmp_path):
    uninterrupted = _report(digits_model, digits)
    assert counted_attacks.batches == 3 * 3  # three objectives, three batches each
    counted_attacks.batches, counted_attacks.stop_after = 0, 5  # inside the second attack
    with pytest.raises(Interrupted), attacks.attack_cache(tmp_path) as cache:
        _report(digits_model, digits)
    assert cache.made == 1 and len(list(tmp_path.glob("attack-*.npy"))) == 1  # the unfinished one left nothing
    counted_attacks.batches, counted_attacks.stop_after = 0, None
    with attacks.attack_cache(tmp_path) as cache:
        resumed = _report(digits_model, digits)
    assert (cache.loaded, cache.made, counted_attacks.batches) == (1, 2, 2 * 3)
    assert json.dumps(resumed) == json.dumps(uninterrupted)  # NaN (an exit not attacked) included
    assert not tmp_path.exists()  # a block left without an error deletes its attacks


def test_the_cache_serves_no_attack_made_with_other_weights_or_thresholds(digits_model, digits, tmp_path):
    path = tmp_path / "model.keras"
    digits_model.save(path)
    with attacks.attack_cache(tmp_path / "cache") as cache:
        _report(digits_model, digits)
        made = cache.made
        _report(digits_model, digits, policy=ExitPolicy(digits_model.exit_policy.thresholds * 0.5))
        assert (cache.loaded, cache.made) == (0, 2 * made)
        other = models.load(path)
        kernel = other.trainable_weights[0]
        kernel.assign(kernel.numpy() + 1e-3)
        _report(other, digits)
        assert (cache.loaded, cache.made) == (0, 3 * made)
        _report(models.load(path), digits)  # the same weights from the file: every attack loaded
        assert (cache.loaded, cache.made) == (made, 3 * made)


def test_the_suite_run_again_loads_each_of_its_attacks(digits_model, digits, tmp_path, monkeypatch):
    # Stub suite attacks that dim the images by their target rank: cheap, and a different result per rank.
    monkeypatch.setattr(autoattack, "suite_attack", lambda *args: lambda x, y, rank, seed: x * (
        1 - 0.1 * tf.cast(rank, x.dtype)))
    images, labels = digits.x_test[:24], digits.y_test[:24]
    settings = attacks.AutoAttack(0.2, steps=2, queries=2, num_targets=2)

    def suite():
        return autoattack.run_suite(digits_model, images, labels, settings, objectives=["exit_1", "routing"],
                                    batch_size=BATCH)

    attacked = 2 * (1 + 1 + 2 + 1) + 3  # per objective APGD-CE, APGD-DLR, APGD-T per rank, Square; the checks
    with attacks.attack_cache(tmp_path) as cache:
        first = suite()
        assert (cache.loaded, cache.made) == (0, attacked)  # a file per attack: no two share a digest
        again = suite()
        assert (cache.loaded, cache.made) == (attacked, attacked)
    assert json.dumps(dataclasses.asdict(again)) == json.dumps(dataclasses.asdict(first))


def test_a_file_is_refused_as_the_attack_cache(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("{}")
    with pytest.raises(InputError, match="is a file: pass a directory"), attacks.attack_cache(path):
        pass
    assert path.read_text() == "{}"


@pytest.mark.slow
def test_evaluate_resumes_from_its_attack_cache_and_empties_it(digits_model, counted_attacks, tmp_path):
    model_path, cache, out = tmp_path / "model.keras", tmp_path / "cache", tmp_path / "report.json"
    digits_model.save(model_path)
    (tmp_path / "cache").mkdir()
    (cache / "notes.npy").write_bytes(b"the user's own file")
    argv = ["--model", str(model_path), "--dataset", "digits", "--samples", "16", "--attacks", "fgsm",
            "--objectives", "exit_1,routing", "--batch-size", "8", "--attack-cache", str(cache), "--out", str(out)]
    counted_attacks.stop_after = 3
    with pytest.raises(SystemExit):  # the command's "unexpected Interrupted" error
        evaluate_cli.main(argv)
    assert not out.exists() and len(list(cache.glob("attack-*.npy"))) == 1
    counted_attacks.batches, counted_attacks.stop_after = 0, None
    assert evaluate_cli.main(argv) == 0
    assert counted_attacks.batches == 3 * 2  # of the four attacks (two objectives, two slowdowns) the first loaded
    assert json.loads(out.read_text())["num_samples"] == 16
    assert sorted(p.name for p in cache.iterdir()) == ["notes.npy"]  # only the cache's own files deleted
