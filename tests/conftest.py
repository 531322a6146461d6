"""Shared fixtures: small deterministic models and images (CPU, no network)."""

import keras
import numpy as np
import pytest

from rdinet_tf import data, models
from rdinet_tf.policy import ExitPolicy


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
    return data.load("digits")


def train_on_digits(splits, epochs):
    """A SmallCNN trained briefly (clean) on the embedded digits, with a calibrated policy."""
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), defense="none")
    model.fit(data.make_dataset(splits.x_train, splits.y_train, 64, shuffle=True, seed=0),
              epochs=epochs, verbose=0)
    model.exit_policy = ExitPolicy.calibrate(model, splits.x_val)
    return model
