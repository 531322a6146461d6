"""Shared fixtures: small deterministic models and images (CPU, no network)."""

import numpy as np
import pytest

from rdinet_tf import models


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
