"""Shared fixtures: small deterministic models and images (CPU, no network).

Every model here is built or trained once per session and shared; a test
that changes a shared model (its policy, a monkeypatched stage) restores it.
"""

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from rdinet_tf import data, models
from rdinet_tf.exits.policy import ExitPolicy


@pytest.fixture(scope="session", autouse=True)
def subprocesses_import_this_checkout():
    """Python subprocesses the tests start (train_harness.py, python -c ...) import this checkout's rdinet_tf,
    not whichever one an editable install points to: the checkout goes first on PYTHONPATH."""
    root, previous = str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [previous])])
    yield
    if previous is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = previous


@pytest.fixture(scope="session")
def smallcnn():
    return models.build("smallcnn")


@pytest.fixture(scope="session")
def resnet38():
    return models.build("resnet38")


@pytest.fixture(scope="session")
def mnist_like():
    return np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="session")
def cifar_like():
    return np.random.default_rng(1).random((8, 32, 32, 3), dtype=np.float32)


@pytest.fixture(scope="session")
def digits():
    """The embedded digits (28x28x1, no download), split 0."""
    return data.load("digits")


@pytest.fixture(scope="session")
def train_digits(digits):
    """``train_digits(defense="none", attack=None)``: a SmallCNN trained briefly on the embedded digits
    (Adam 1e-3, batch 64, 4 epochs, seed 0); each setting is trained once per session and shared."""
    trained = {}

    def train(defense="none", attack=None):
        key = (defense, None if defense == "none" else attack)
        if key not in trained:
            keras.utils.set_random_seed(0)
            model = models.build("smallcnn")
            model.compile(optimizer=keras.optimizers.Adam(1e-3), defense=defense, attack=key[1])
            model.fit(data.make_dataset(digits.x_train, digits.y_train, 64, shuffle=True, seed=0),
                      epochs=4, verbose=0)
            trained[key] = model
        return trained[key]

    return train


@pytest.fixture(scope="session")
def digits_model(train_digits, digits):
    """The clean digits SmallCNN, with a policy calibrated on the validation split."""
    model = train_digits("none")
    model.exit_policy = ExitPolicy.calibrate(model, digits.x_val)
    return model


@pytest.fixture
def umask():
    """The process umask (files written by the library get 0o666 & ~umask, directories 0o777 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture
def cli_error(capsys):
    """``cli_error(main, argv)``: run a command line expecting its error convention (exit code 2, one line
    ``error: <message>`` on stderr, no traceback); returns the message."""

    def run(main, argv):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("error: "), err
        return err[len("error: "):-1]

    return run


@pytest.fixture
def train_compile_arguments(monkeypatch, tmp_path):
    """``f(argv) -> kwargs``: the arguments ``rdinet-train argv`` passes to ``compile``, stopping there."""
    from rdinet_tf import models
    from rdinet_tf.cli import train

    class Compiled(Exception):
        pass

    compiled = {}

    def record(self, **kwargs):
        compiled.update(kwargs)
        raise Compiled

    monkeypatch.setattr(models.MultiExitModel, "compile", record)

    def arguments(argv):
        compiled.clear()
        with pytest.raises(Compiled):
            train.run(train.parse_args([*argv, "--out", str(tmp_path / "run")]))
        return dict(compiled)

    return arguments
