"""The paper recipes' optimizer makes torch.optim.SGD's updates, learning-rate drops included."""

import keras
import numpy as np
import pytest

from rdinet_tf import models
from rdinet_tf.training import ReferenceSGD, learning_rate_schedule, paper_optimizer

torch = pytest.importorskip("torch")

STEPS = 60


def _largest_relative_difference(optimizer):
    """Max over variables of |keras - torch| / |torch| after ``STEPS`` identical gradient steps."""
    recipe = models.MODELS["smallcnn"].paper_recipe  # weight decay 5e-4, drops at 11,700 / 13,100 and 12,900 / 13,100
    keras.utils.set_random_seed(0)
    model = models.build("smallcnn")
    variables = model.trainable_variables
    start = [np.array(v) for v in variables]
    optimizer = optimizer(recipe)
    schedule = learning_rate_schedule(recipe, STEPS, learning_rate=0.05)
    parameters = [torch.nn.Parameter(torch.tensor(w)) for w in start]
    reference = torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=recipe.weight_decay)
    rng = np.random.default_rng(0)
    drops = 0
    for step in range(STEPS):
        gradients = [rng.normal(0, 0.1, w.shape).astype(np.float32) for w in start]
        rate = float(schedule(step))
        drops += rate != reference.param_groups[0]["lr"]
        reference.param_groups[0]["lr"] = rate
        for parameter, gradient in zip(parameters, gradients):
            parameter.grad = torch.tensor(gradient)
        reference.step()
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in gradients], variables))
    assert drops == 2
    differences = []
    for variable, parameter, initial in zip(variables, parameters, start):
        expected = parameter.detach().numpy()
        assert np.linalg.norm(expected - initial) > 0
        differences.append(np.linalg.norm(np.array(variable) - expected) / np.linalg.norm(expected))
    return max(differences)


def test_reference_sgd_matches_torch_sgd_through_the_learning_rate_drops():
    assert _largest_relative_difference(lambda p: paper_optimizer(p, STEPS, learning_rate=0.05)) < 1e-5


def test_keras_decoupled_sgd_does_not_match_torch():
    """The comparison can tell: Keras's own SGD (decoupled decay, rate inside the momentum) differs."""
    decoupled = _largest_relative_difference(lambda p: keras.optimizers.SGD(
        learning_rate_schedule(p, STEPS, 0.05), momentum=0.9, weight_decay=p.weight_decay))
    assert decoupled > 1e-3


def test_reference_sgd_round_trips_its_config_and_refuses_bad_settings():
    optimizer = ReferenceSGD(0.1, momentum=0.8, weight_decay=1e-4)
    again = ReferenceSGD.from_config(optimizer.get_config())
    assert (again.momentum, again.l2_decay) == (0.8, 1e-4)
    with pytest.raises(ValueError, match="momentum"):
        ReferenceSGD(0.1, momentum=1.5)
