"""The package's layering: imports point one way, and the device package needs no TensorFlow or Keras."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rdinet_tf"
DEVICE = ROOT / "rdinet_lite"
# rdinet_tf's folders along the data flow, from the bottom up; a module may import its own layer, those below
# and the device package rdinet_lite (which imports nothing of rdinet_tf).
LAYERS = [("catalog", "data"), ("architecture",), ("exits",), ("attacks",), ("training",), ("models",), ("evaluation",),
          ("baselines",), ("export",), ("experiments",), ("cli", "train")]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
FORBIDDEN_ON_DEVICE = {"tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "torch"}


def _imports(path):
    """``(top-level third-party modules, rdinet_tf modules)`` imported anywhere in ``path``.

    Relative imports are resolved against ``path``'s package: ``from . import x`` in rdinet_tf/cli/train.py
    is ``rdinet_tf.cli.x``, ``from ..exits import policy`` is ``rdinet_tf.exits.policy``.
    """
    external, internal = set(), set()
    package = list(path.relative_to(ROOT).parent.parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module
            names = ([f"{base}.{alias.name}" for alias in node.names] if base.startswith("rdinet_tf")
                     and (node.level or base == "rdinet_tf") else [base])
        else:
            continue
        for name in names:
            if name.startswith("rdinet_tf."):
                internal.add(name[len("rdinet_tf."):])
            else:
                external.add(name.split(".")[0])
    return external, internal


def test_relative_imports_are_resolved_and_checked(tmp_path, monkeypatch):
    """A relative import counts like the absolute one it stands for (an upward one among them is caught)."""
    module = PACKAGE / "exits" / "policy.py"
    source = "from ..evaluation import report\nfrom . import policy\nfrom ...rdinet_tf import data\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)
    _, internal = _imports(module)
    assert internal == {"evaluation.report", "exits.policy", "data"}
    with pytest.raises(AssertionError, match="imports .*evaluation.* from a layer above it"):
        test_imports_point_down_the_layers(module)


def _layer(relative):
    return RANK[relative.parts[0].removesuffix(".py")]


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
                                        or p.parent != PACKAGE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    relative = path.relative_to(PACKAGE)
    _, internal = _imports(path)
    if relative.name == "__main__.py":  # a ``python -m`` entry point runs its command line, and only that
        assert internal and all(name.startswith("cli.") for name in internal), f"{relative} imports {internal}"
        internal = set()
    upward = [name for name in internal if _layer(Path(*name.split("."))) > _layer(relative)]
    assert not upward, f"{relative} imports {upward} from a layer above it"


@pytest.mark.parametrize("path", sorted(DEVICE.rglob("*.py")), ids=lambda p: p.name)
def test_the_device_package_imports_neither_tensorflow_nor_rdinet_tf(path):
    external, internal = _imports(path)
    assert not external & (FORBIDDEN_ON_DEVICE | {"rdinet_tf"}), f"{path.name} imports {external}"


def test_importing_the_device_package_loads_no_tensorflow_even_where_it_is_installed():
    code = ("import sys, rdinet_lite, rdinet_lite.bench, rdinet_lite.edge, rdinet_lite.latency, rdinet_lite.manifest; "
            "assert not {'tensorflow', 'keras'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
