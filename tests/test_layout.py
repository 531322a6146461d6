"""The package's layering: imports point one way, and the device side needs no TensorFlow or Keras."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rdinet_tf"
# Layers from the bottom up; a module may import only its own layer and those below.
LAYERS = [("errors", "inputs", "accounting", "files"), ("data",), ("architecture",), ("flops",), ("policy",),
          ("adversarial",), ("distribution",), ("distillation",), ("training", "guard"), ("models",), ("evaluate",),
          ("pruning", "import_torch"), ("runtime", "bench_kit"), ("export",), ("cli", "train")]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
DEVICE_MODULES = ["runtime", "bench_kit", "cli/bench", "cli/base"]
FORBIDDEN_ON_DEVICE = {"tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "torch"}


def _module_file(name):
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


def _imports(path):
    """``(top-level third-party modules, rdinet_tf modules)`` imported anywhere in ``path``.

    Relative imports are resolved against ``path``'s package: ``from . import x`` in rdinet_tf/cli/train.py
    is ``rdinet_tf.cli.x``, ``from ..policy import y`` is ``rdinet_tf.policy.y``.
    """
    external, internal = set(), set()
    package = ["rdinet_tf", *path.relative_to(PACKAGE).parent.parts]
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
    module = PACKAGE / "policy.py"
    source = "from . import evaluate\nfrom .adversarial import attacks\nfrom ..rdinet_tf import flops\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)
    _, internal = _imports(module)
    assert internal == {"evaluate", "adversarial.attacks", "flops"}
    with pytest.raises(AssertionError, match="imports .*evaluate.* from a layer above it"):
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


def test_device_modules_need_neither_tensorflow_nor_keras():
    seen, pending = set(), list(DEVICE_MODULES)
    while pending:
        name = pending.pop().replace("/", ".")
        if name in seen:
            continue
        seen.add(name)
        external, internal = _imports(_module_file(name))
        assert not external & FORBIDDEN_ON_DEVICE, f"rdinet_tf.{name} imports {external & FORBIDDEN_ON_DEVICE}"
        pending += [n for n in internal if _module_file(n).is_file()]
    assert {"runtime", "bench_kit", "errors", "inputs", "accounting", "files"} <= seen
