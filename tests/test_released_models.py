"""Every released model (benchmarks/models/) loads and answers as its summary says, on real test images."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rdinet_tf import data, models

RELEASED = Path(__file__).resolve().parents[1] / "benchmarks" / "models"
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
SUMMARIES = sorted(RELEASED.glob("*.summary.json"))
SUITES = sorted(RELEASED.glob("*.suite.json"))


def test_every_released_model_has_its_summary_and_its_readme_row():
    readme = (RELEASED / "README.md").read_text()
    for path in RELEASED.glob("*.keras"):
        assert path.with_name(path.name.replace(".keras", ".summary.json")).is_file(), path.name
        assert f"`{path.stem}`" in readme, f"{path.stem} has no row in benchmarks/models/README.md"
        assert path.stat().st_size < 20 * 2**20, f"{path.name} is over 20 MiB: saved with optimizer state?"
    for path in RELEASED.glob("*.json"):
        assert path.with_name(path.name.split(".")[0] + ".keras").is_file(), f"{path.name} has no released model"


@pytest.mark.parametrize("suite_path", SUITES, ids=lambda p: p.name.split(".")[0])
def test_a_released_suite_report_is_about_its_model(suite_path):
    suite = json.loads(suite_path.read_text())
    summary = json.loads(suite_path.with_name(suite_path.name.replace(".suite.", ".summary.")).read_text())
    report = summary.get("report")
    samples = report["num_samples"] if report else summary["ata_samples"]
    pgd = report["per_sample_worst_case_ata"] if report else summary["pruned"]["ata"]
    assert suite["num_samples"] == samples
    # The suite run repeats the PGD forms with the same seeds: the same survivors up to float rounding.
    assert abs(suite["per_sample_worst_case_ata"] - pgd) <= 5 / samples
    assert suite["per_sample_worst_case_with_autoattack"] <= suite["per_sample_worst_case_ata"]


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason="needs the real datasets in ../shared/data")
@pytest.mark.parametrize("summary_path", SUMMARIES, ids=lambda p: p.name.split(".")[0])
def test_a_released_model_reproduces_its_clean_accuracy(summary_path):
    summary = json.loads(summary_path.read_text())
    model = models.load(summary_path.with_name(summary_path.name.replace(".summary.json", ".keras")))
    # A training run's calibrated thresholds; a pruned baseline (a pruning run) is static: every side exit closed.
    thresholds = summary.get("thresholds", [0.0] * (model.num_exits - 1))
    np.testing.assert_allclose(model.exit_policy.thresholds, thresholds, rtol=1e-6)
    splits = data.load(summary["dataset"]["name"], data_dir=DATA_DIR, seed=summary["args"]["seed"])
    check = summary["release_check"]
    x, y = splits.x_test[:check["samples"]], splits.y_test[:check["samples"]]
    accuracy = model.exit_policy.predict(model, x).accuracy(y)
    # The same images and weights: equal up to float rounding on another CPU (at most two flipped answers).
    assert abs(accuracy - check["accuracy"]) <= 2 / len(x)
    # On the whole test split (a pruning run's "pruned" entry): within 4 standard errors of the subset's.
    full = summary["test_clean" if "test_clean" in summary else "pruned"]["accuracy"]
    assert abs(accuracy - full) <= 4 * math.sqrt(full * (1 - full) / len(x)) + 1 / len(x)
