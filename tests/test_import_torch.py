"""Importing reference PyTorch checkpoints: exact logits, clear refusals, the CLI."""

import os
import pathlib
import sys

import pytest

torch = pytest.importorskip("torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from torch_reference import randomized  # noqa: E402

from rdinet_tf.models import torch_checkpoint  # noqa: E402
from rdinet_tf.models.torch_reference import REFERENCE_MODELS  # noqa: E402
from rdinet_tf.cli import import_torch as import_cli  # noqa: E402
from rdinet_lite.errors import InputError  # noqa: E402
from rdinet_tf.models import MODELS  # noqa: E402

PUBLIC_CHECKPOINT = (pathlib.Path(__file__).resolve().parents[2]
                     / "shared/models/resnet38_triple_wins.pth.tar")


@pytest.fixture(scope="module")
def smallcnn_checkpoint(tmp_path_factory):
    """A bare SmallCNN state dict saved to disk, and the reference model it came from."""
    reference = randomized(REFERENCE_MODELS["smallcnn"](), seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "smallcnn.pth"
    torch.save(reference.state_dict(), path)
    return path, reference


def _save(state_dict, path):
    torch.save(state_dict, path)
    return path


def _reference_logits(reference, images):
    with torch.no_grad():
        return [t.numpy() for t in reference(torch.from_numpy(images.transpose(0, 3, 1, 2)))]


def _keras_logits(model, images):
    return [np.asarray(t) for t in model(images, training=False)]


@pytest.mark.parametrize("name, wrapped",
                         [("smallcnn", False), ("resnet38", True), ("mobilenetv2", False)])
def test_imported_logits_match_reference(name, wrapped, tmp_path):
    reference = randomized(REFERENCE_MODELS[name]())
    state_dict = reference.state_dict()
    if wrapped:  # the public checkpoint's form: DataParallel prefix inside a dict
        state_dict = {"arch": name, "iter": 1,
                      "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}
    model = torch_checkpoint.load_torch_checkpoint(_save(state_dict, tmp_path / "ckpt.pth"), name)

    images = np.random.default_rng(0).random((3, *MODELS[name].input_shape), dtype=np.float32)
    expected, actual = _reference_logits(reference, images), _keras_logits(model, images)
    assert len(actual) == len(expected) == model.num_exits
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert e.std() > 0.05, "degenerate reference logits would hide mapping errors"
        assert np.abs(a - e).max() <= 1e-4, f"{name} exit {k + 1}"


def test_reference_layout_matches_spec():
    """The test's PyTorch models have the parameter counts of the reference architectures."""
    resnet = REFERENCE_MODELS["resnet38"]().state_dict()
    assert (len(resnet), sum(t.numel() for t in resnet.values())) == (296, 695_909)
    mobilenet = REFERENCE_MODELS["mobilenetv2"]()
    assert sum(p.numel() for p in mobilenet.parameters()) == 2_753_398


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("fc1.weight"), "no tensor 'fc1.weight' (expected shape (200, 1024))"),
    (lambda sd: sd.update({"conv3.weight": torch.zeros(64, 32, 5, 5)}),
     "'conv3.weight' has shape (64, 32, 5, 5), expected (64, 32, 3, 3)"),
    (lambda sd: sd.update({"branch_layer3.0.weight": torch.zeros(3)}),
     "'branch_layer3.0.weight' (shape (3,)) is not part of the reference smallcnn"),
])
def test_bad_checkpoint_is_refused_with_the_tensor_named(edit, message, smallcnn_checkpoint, tmp_path):
    state_dict = torch.load(smallcnn_checkpoint[0], weights_only=True)
    edit(state_dict)
    with pytest.raises(InputError) as error:
        torch_checkpoint.load_torch_checkpoint(_save(state_dict, tmp_path / "bad.pth"), "smallcnn")
    assert message in str(error.value)


def test_checkpoint_with_code_is_refused(tmp_path):
    path = _save({"state_dict": {"fc": torch.zeros(1)}, "callback": pathlib.PurePosixPath("x")},
                 tmp_path / "pickled.pth")
    with pytest.raises(InputError, match="weights_only=True"):
        torch_checkpoint.load_torch_checkpoint(path, "smallcnn")


def test_without_torch_the_error_says_how_to_install(monkeypatch, smallcnn_checkpoint):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r'pip install "rdinet_tf\[torch\]"'):
        torch_checkpoint.load_torch_checkpoint(smallcnn_checkpoint[0], "smallcnn")


def test_cli_writes_a_loadable_model(smallcnn_checkpoint, tmp_path, capsys):
    path, reference = smallcnn_checkpoint
    out = tmp_path / "smallcnn.keras"
    assert import_cli.main(["--checkpoint", str(path), "--model", "smallcnn", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["smallcnn.keras"]
    model = keras.models.load_model(out)
    images = np.random.default_rng(2).random((2, 28, 28, 1), dtype=np.float32)
    for a, e in zip(_keras_logits(model, images), _reference_logits(reference, images)):
        assert np.abs(a - e).max() <= 1e-4


def test_cli_failure_leaves_no_file(smallcnn_checkpoint, tmp_path, cli_error):
    out = tmp_path / "out" / "model.keras"
    out.parent.mkdir()
    message = cli_error(import_cli.main, ["--checkpoint", str(smallcnn_checkpoint[0]), "--model", "resnet38",
                                          "--out", str(out)])
    assert message.startswith("checkpoint tensor 'conv1.weight' has shape (32, 1, 3, 3)")
    assert os.listdir(out.parent) == []
    assert "must name a .keras file" in cli_error(
        import_cli.main, ["--checkpoint", str(smallcnn_checkpoint[0]), "--model", "smallcnn",
                          "--out", str(tmp_path / "out" / "model.h5")])
    assert os.listdir(out.parent) == []


@pytest.mark.skipif(not PUBLIC_CHECKPOINT.exists(), reason="the authors' ResNet-38 checkpoint is not here")
def test_public_resnet38_checkpoint_matches_reference():
    """All 296 tensors load strictly into the PyTorch reference and into our model, alike."""
    state_dict = torch.load(PUBLIC_CHECKPOINT, map_location="cpu", weights_only=True)["state_dict"]
    reference = REFERENCE_MODELS["resnet38"]()
    reference.load_state_dict({k.removeprefix("module."): v for k, v in state_dict.items()})
    model = torch_checkpoint.load_torch_checkpoint(PUBLIC_CHECKPOINT, "resnet38")
    images = np.random.default_rng(3).random((2, 32, 32, 3), dtype=np.float32)
    for a, e in zip(_keras_logits(model, images), _reference_logits(reference.eval(), images)):
        assert np.abs(a - e).max() <= 1e-4
