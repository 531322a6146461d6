"""The notebooks in notebooks/: stored with the outputs of a run on real MNIST, and each runs end to end
in FAST mode.

Each notebook is executed with nbclient in a fresh kernel of this interpreter,
with ``RDINET_NOTEBOOK_FAST=1`` (tiny training and attack budgets, embedded
digits data), ``MPLBACKEND=Agg`` and a temporary working directory; any cell
error fails the test, and the stored file is left as it was. Refresh the stored
outputs after changing a notebook, one notebook at a time, from the repository root:
``RDINET_DATA_DIR=/path/to/data PYTHONPATH=$PWD jupyter nbconvert --to notebook --execute --inplace
--ExecutePreprocessor.timeout=3600 --ExecutePreprocessor.record_timing=False notebooks/NAME.ipynb``,
then ``python notebooks/shrink_figures.py notebooks/NAME.ipynb`` (256-colour figures, a third of the size).
"""

import json
import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01_quickstart.ipynb", "02_attacks_and_defenses.ipynb", "03_tflite_deployment.ipynb",
            "04_pruning_baseline.ipynb"]
KERNEL = "python3"
CELL_TIMEOUT_S = 600
MAX_STORED_BYTES = 150_000  # outputs and figures included
# Paths of the machine that ran a notebook (a temporary directory, a home, a checkout) have no place in its outputs.
MACHINE_PATH = re.compile(r"(?<![\w.])/(tmp|home|root|work|Users|var|private|mnt)/")
# LiteRT's one line when its first interpreter starts, which no log level silences (notebook 03 says so).
XNNPACK_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."

# Checks run in the notebook's kernel after its last cell (appended to the executed copy, not stored):
# the results it shows, recomputed from first principles where that is cheap. RULE is the early-exit
# rule in numpy (float64 entropies), independent of the library's routing.
RULE = """
import numpy as np

def _rule(exit_logits, thresholds):
    probs = [np.exp(z - z.max(-1, keepdims=True)) for z in map(np.asarray, exit_logits)]
    probs = [p / p.sum(-1, keepdims=True) for p in probs]
    entropy = np.stack([-(p * np.log(p + 1e-5)).sum(-1) for p in probs], 1)
    exits = np.full(len(entropy), len(probs) - 1)
    for i in range(len(entropy)):
        for k, t in enumerate(thresholds):
            if t > 0 and entropy[i, k] < t:
                exits[i] = k
                break
    return exits, np.array([probs[k][i].argmax() for i, k in enumerate(exits)])

def _check_report(report, model, images, labels):
    exits, predictions = _rule(model.predict(images, verbose=0), model.exit_policy.thresholds)
    tie = 1 / len(labels)  # one image may sit on a threshold within float32 rounding
    assert abs(report.clean.accuracy - np.mean(predictions == labels)) <= tie, report.clean
    assert np.abs(np.asarray(report.clean.exit_shares) - np.bincount(exits, minlength=model.num_exits)
                  / len(labels)).max() <= tie
    every = report.attacks + report.slowdown
    assert report.worst_case_ata == min(r.accuracy for r in every)
    assert report.per_sample_worst_case_ata <= report.worst_case_ata
"""
CHECKS = {
    "01_quickstart.ipynb": """
assert np.isfinite(history.history["loss"]).all() and np.all(np.diff(costs) > 0)
_check_report(report, model, x_eval, y_eval)
np.testing.assert_array_equal(reloaded.exit_policy.thresholds, model.exit_policy.thresholds)
for a, b in zip(reloaded.predict(x_eval[:16], verbose=0), model.predict(x_eval[:16], verbose=0)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
""",
    "02_attacks_and_defenses.ipynb": """
for defense, report in reports.items():
    _check_report(report, trained[defense], x_eval, y_eval)
_check_report(method_report, model, x_eval, y_eval)
assert np.abs(x_adv - x_show).max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
assert len(curve) == COST_POINTS and points[-1].accuracy == reports["main"].clean.accuracy
calibration = splits.x_val[:CALIBRATION_SAMPLES]
calibration_exits, _ = _rule(model.predict(calibration, verbose=0), robust.thresholds)
assert rdi.exit_costs(model, thresholds=robust.thresholds)[calibration_exits].mean() <= budget * (1 + 1e-9)
""",
    "03_tflite_deployment.ipynb": """
exits, predictions = _rule(model.predict(x_eval, verbose=0), model.exit_policy.thresholds)
assert QUANTIZATION == "float32" and np.mean(chain.exits == exits) >= 0.98
assert np.mean(chain.predictions == predictions) >= 0.98
assert comparison["samples"] == len(x_eval) and comparison["tflite_accuracy"] == chain.accuracy(y_eval)
assert abs(comparison["keras_accuracy"] - np.mean(predictions == y_eval)) <= 1 / len(x_eval)
assert manifest["thresholds"] == [float(t) for t in model.exit_policy.thresholds]
assert (first.exit, first.prediction) == (exits[0], predictions[0])
""",
    "04_pruning_baseline.ipynb": """
_check_report(rdi_report, rdi_model, x_eval, y_eval)
assert abs(result.sparsity - result.target_sparsity) <= 0.02, (result.sparsity, result.target_sparsity)
assert rows["RDI (early exit)"]["TA"] == rdi_report.clean.accuracy
pruned_cost = pruning.final_exit_cost(pruned, CONVENTION, sparse=True)
assert pruned_cost < pruning.final_exit_cost(baseline, CONVENTION) and abs(pruned_cost - target) <= 0.05 * target
""",
}


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory):
    """A private ``python3`` kernelspec that runs this interpreter (the one with rdinet_tf).

    It goes first on ``JUPYTER_PATH``, so the kernel is this interpreter whatever
    kernels (or none) the machine has registered; nothing is written to the user's
    Jupyter directories.
    """
    kernelspec = pytest.importorskip("ipykernel.kernelspec")
    prefix = tmp_path_factory.mktemp("jupyter")
    kernelspec.install(kernel_name=KERNEL, prefix=str(prefix))
    return prefix / "share" / "jupyter"


def _environment(monkeypatch, kernel_dir):
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        [str(kernel_dir), *filter(None, [os.environ.get("JUPYTER_PATH")])]))
    monkeypatch.setenv("RDINET_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # each notebook's setup cell quiets TensorFlow
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))  # rdinet_tf without pip install


def test_every_notebook_is_here():
    assert [path.name for path in NOTEBOOKS] == EXPECTED == sorted(CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, kernel_dir, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    _environment(monkeypatch, kernel_dir)
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    assert spec.argv[0] == sys.executable, f"kernel {KERNEL!r} runs {spec.argv[0]}, not {sys.executable}"

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(RULE + CHECKS[path.name]))
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    stored = path.read_bytes()
    client = nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                                     startup_timeout=180, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed in FAST mode (or its checks, the last cell):\n{error}", pytrace=False)
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before, "the notebook wrote into notebooks/"
    assert path.read_bytes() == stored, f"running {path.name} rewrote the stored notebook"
    noise = _stderr_noise(notebook.cells)
    assert not noise, f"{path.name} shows log output on stderr (silence it in its setup cell): {noise[0][:300]}"


def _output_text(output):
    if output["output_type"] == "stream":
        return "".join(output["text"])
    data = output.get("data", {})
    return "".join(data.get("text/plain", "")) + "".join(output.get("traceback", []))


def _stderr_noise(cells):
    return [text for cell in cells for output in cell.get("outputs", []) if output.get("name") == "stderr"
            for text in [_output_text(output)] if text.strip() != XNNPACK_NOTICE]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_stored_with_the_outputs_of_a_real_data_run(path):
    text = path.read_text()
    cells = [cell for cell in json.loads(text)["cells"] if cell["cell_type"] == "code"]
    rerun = f"run it again top to bottom (see this module's docstring): {path}"
    assert [cell["execution_count"] for cell in cells] == list(range(1, len(cells) + 1)), rerun
    assert not [i for i, cell in enumerate(cells) if "execution" in cell["metadata"]], \
        f"{path.name}: cells hold nbclient's timing metadata; {rerun} with record_timing=False"
    outputs = [output for cell in cells for output in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"], f"{path.name} stores an error; {rerun}"
    noise = _stderr_noise(cells)
    assert not noise, f"{path.name} stores log output on stderr (silence it in its setup cell): {noise[0][:300]}"
    printed = [_output_text(o) for o in outputs]
    assert any(line.startswith("mnist (") for output in printed for line in output.splitlines()), \
        f"{path.name}: the stored run did not load MNIST; run it with RDINET_DATA_DIR set"
    machine = [match.group(0) for output in printed for match in [MACHINE_PATH.search(output)] if match]
    assert not machine, f"{path.name} shows a path of the machine that ran it: {machine}"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} stores no figure; {rerun}"
    assert len(text.encode()) <= MAX_STORED_BYTES, \
        f"{path.name} takes {len(text.encode())} bytes; shrink its figures (figsize, dpi) below {MAX_STORED_BYTES}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_has_one_parameters_cell_that_reads_fast(path):
    cells = json.loads(path.read_text())["cells"]
    tagged = [cell for cell in cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code", \
        f"{path.name} needs exactly one code cell tagged 'parameters'"
    assert "RDINET_NOTEBOOK_FAST" in "".join(tagged[0]["source"])
