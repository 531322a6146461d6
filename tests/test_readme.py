"""The README's Python example runs as written (on the embedded digits, shortened)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example():
    return re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)


@pytest.mark.slow
def test_the_python_example_runs(tmp_path, monkeypatch):
    code = _python_example()
    shortened = {'data.load("mnist", data_dir="path/to/data")': 'data.load("digits")', "epochs = 2": "epochs = 1",
                 "rdi.PGD(0.3, 0.01, 40)": "rdi.PGD(0.3, 0.01, 2)", "x_test[:500]": "x_test[:32]",
                 "y_test[:500]": "y_test[:32]"}
    for old, new in shortened.items():
        assert old in code, f"the README example changed: update this test's {old!r}"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "rdi_smallcnn.keras").is_file()
    assert namespace["report"].num_samples == 32 and "HEADLINE" in namespace["report"].table()
    assert len(namespace["model"].history.history["val_pgd_accuracy"]) == 1
