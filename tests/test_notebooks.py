"""The notebooks in notebooks/: each runs end to end in FAST mode, and is stored without outputs.

Each notebook is executed with nbclient in a fresh kernel of this interpreter,
with ``RDINET_NOTEBOOK_FAST=1`` (tiny training and attack budgets, embedded
digits data), ``MPLBACKEND=Agg`` and a temporary working directory; any cell
error fails the test. Strip outputs before committing with
``jupyter nbconvert --clear-output --inplace notebooks/*.ipynb`` (or re-save
the notebook with nbformat after emptying ``outputs`` and ``execution_count``).
"""

import json
import os
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
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))  # rdinet_tf without pip install


def test_every_notebook_is_here():
    assert [path.name for path in NOTEBOOKS] == EXPECTED


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
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    client = nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                                     startup_timeout=180, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed in FAST mode:\n{error}", pytrace=False)
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before, "the notebook wrote into notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    notebook = json.loads(path.read_text())
    dirty = [index for index, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None
                  or "execution" in cell.get("metadata", {}))]
    assert not dirty, (f"{path.name}: code cells {dirty} have outputs, execution counts or timing "
                       "metadata; strip them: jupyter nbconvert --clear-output --inplace " + str(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_has_one_parameters_cell_that_reads_fast(path):
    cells = json.loads(path.read_text())["cells"]
    tagged = [cell for cell in cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code", \
        f"{path.name} needs exactly one code cell tagged 'parameters'"
    assert "RDINET_NOTEBOOK_FAST" in "".join(tagged[0]["source"])
