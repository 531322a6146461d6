"""Adversarial attacks on multi-exit models: an attack method times an exit objective.

Methods (L-inf unless noted): :class:`PGD` (random start, step, steps),
:func:`fgsm`, :func:`fast_fgsm` (random start, step 1.25 eps: the CPU-budget
training attack), :class:`WRM` (L2 Lagrangian ascent) and :class:`RandomNoise`.

Objectives, by name (exits are named as the model's outputs, 1-based):

* ``"exit_k"``: cross-entropy of exit k alone; only stages up to k are run.
* ``"main"``: the last exit (the backbone's own classifier).
* ``"average"``: mean cross-entropy over all exits.
* ``"max_average"``: K independent attacks, attack k on exit k alone, then for
  each sample the candidate with the largest summed per-exit cross-entropy.
* ``"random_average"``: cross-entropy averaged with random exit weights.
* ``"routing"``: at every step each sample ascends the cross-entropy of the
  exit the entropy policy would route it to (needs a policy).

Everything is batched TensorFlow, usable inside ``tf.function``; attacks run
the model in inference mode and never change its weights. The same integer
``seed`` gives the same adversarial batch.
"""

import dataclasses

import keras
import tensorflow as tf

from rdinet_tf.errors import InputError

OBJECTIVES = ("main", "average", "max_average", "random_average", "routing")


@dataclasses.dataclass(frozen=True)
class PGD:
    """L-inf projected gradient ascent; ``steps=1`` without random start is FGSM."""

    eps: float
    step_size: float
    steps: int
    random_start: bool = True
    name: str = "pgd"

    def __post_init__(self):
        if not (self.eps >= 0 and self.step_size >= 0 and self.steps >= 1):
            raise InputError(
                f"{self.name} needs eps >= 0, step_size >= 0 and steps >= 1; got eps={self.eps}, "
                f"step_size={self.step_size}, steps={self.steps}"
            )

    def perturb(self, loss_fn, images, labels, seed):
        """Ascend ``loss_fn(x, labels) -> (N,)`` within the eps-ball around ``images``."""
        images = tf.convert_to_tensor(images, tf.float32)
        adversarial = images
        if self.random_start:
            noise = tf.random.stateless_uniform(tf.shape(images), seed, -self.eps, self.eps)
            adversarial = tf.clip_by_value(images + noise, 0.0, 1.0)

        def step(_, x):
            x = x + self.step_size * tf.sign(_input_gradient(loss_fn, x, labels))
            return tf.clip_by_value(tf.clip_by_value(x, images - self.eps, images + self.eps), 0.0, 1.0)

        return _iterate(step, adversarial, self.steps)


def fgsm(eps):
    """Fast gradient sign method: one step of size eps from the clean image."""
    return PGD(eps, eps, 1, random_start=False, name="fgsm")


def fast_fgsm(eps):
    """FGSM with a random start and step 1.25 eps ("fast" adversarial training)."""
    return PGD(eps, 1.25 * eps, 1, random_start=True, name="fast_fgsm")


@dataclasses.dataclass(frozen=True)
class WRM:
    """Wasserstein robust method: ascend eps * CE - 0.5 ||x_adv - x||_2^2 with step 1/sqrt(t+2).

    Unconstrained in L-inf (only clipped to [0, 1]); ``eps`` weighs the loss
    against the L2 transport cost, as in the reference.
    """

    eps: float
    steps: int = 15
    name: str = "wrm"

    def perturb(self, loss_fn, images, labels, seed):
        del seed  # deterministic: starts from the clean image
        images = tf.convert_to_tensor(images, tf.float32)

        def lagrangian(x, y):
            transport = 0.5 * tf.reduce_sum(tf.square(x - images), axis=[1, 2, 3])
            return self.eps * loss_fn(x, y) - transport

        def step(t, x):
            learning_rate = 1.0 / tf.sqrt(tf.cast(t, tf.float32) + 2.0)
            return tf.clip_by_value(x + learning_rate * _input_gradient(lagrangian, x, labels), 0.0, 1.0)

        return _iterate(step, images, self.steps)


@dataclasses.dataclass(frozen=True)
class RandomNoise:
    """Uniform noise in the L-inf eps-ball: the baseline every attack must beat."""

    eps: float
    name: str = "random_noise"

    def perturb(self, loss_fn, images, labels, seed):
        del loss_fn, labels
        images = tf.convert_to_tensor(images, tf.float32)
        noise = tf.random.stateless_uniform(tf.shape(images), seed, -self.eps, self.eps)
        return tf.clip_by_value(images + noise, 0.0, 1.0)


def _iterate(step, images, steps):
    """``images = step(t, images)`` for t in 0..steps-1, as a graph loop; no gradient flows out."""
    _, result = tf.while_loop(lambda t, _: t < steps, lambda t, x: (t + 1, step(t, x)),
                              (tf.constant(0), images))
    return tf.stop_gradient(result)


def _input_gradient(loss_fn, images, labels):
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = tf.reduce_sum(loss_fn(images, labels))
    return tape.gradient(loss, images)


def cross_entropy(labels, logits):
    """Per-sample cross-entropy from logits."""
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def check_objective(objective, num_exits, policy=None):
    """The 0-based exit of an ``"exit_k"``/``"main"`` objective, or None for the others."""
    if objective == "main":
        return num_exits - 1
    if isinstance(objective, str) and objective.startswith("exit_"):
        suffix = objective[len("exit_"):]
        if suffix.isdigit() and 1 <= int(suffix) <= num_exits:
            return int(suffix) - 1
    elif objective in OBJECTIVES:
        if objective == "routing" and policy is None:
            raise InputError("the 'routing' objective needs an exit policy: pass policy=ExitPolicy(...)")
        return None
    raise InputError(
        f"unknown attack objective {objective!r}; choose exit_1..exit_{num_exits} or one of {OBJECTIVES}"
    )


def objective_loss(model, objective, policy=None, seed=(0, 0)):
    """Per-sample loss ``f(x, y) -> (N,)`` that an attack with this objective ascends."""
    exit_index = check_objective(objective, model.num_exits, policy)
    if exit_index is not None:
        return lambda x, y: cross_entropy(y, model.exit_logits(x, [exit_index])[0])
    if objective == "average":
        return lambda x, y: tf.add_n([cross_entropy(y, z) for z in model.exit_logits(x)]) / model.num_exits
    if objective == "random_average":
        weights = tf.random.stateless_uniform([model.num_exits], seed)
        weights = weights / tf.reduce_sum(weights)
        return lambda x, y: tf.add_n(
            [w * cross_entropy(y, z) for w, z in zip(tf.unstack(weights), model.exit_logits(x))])
    if objective == "routing":
        return lambda x, y: cross_entropy(y, policy.route(model.exit_logits(x))[0])
    raise InputError(f"objective {objective!r} is a selection of attacks, not a loss")


def generate(model, images, labels, attack, objective, policy=None, seed=0):
    """Adversarial images for ``model`` by ``attack`` with an exit ``objective`` (see module doc)."""
    check_objective(objective, model.num_exits, policy)
    seed = tf.cast(seed, tf.int32)
    if objective != "max_average":
        loss_fn = objective_loss(model, objective, policy, tf.stack([seed, -1]))
        return attack.perturb(loss_fn, images, labels, tf.stack([seed, 0]))
    candidates = [
        attack.perturb(objective_loss(model, f"exit_{k + 1}"), images, labels, tf.stack([seed, k + 1]))
        for k in range(model.num_exits)
    ]
    return select_max_average(model, candidates, labels)


def select_max_average(model, candidates, labels):
    """For each sample, the candidate with the largest cross-entropy summed over all exits."""
    scores = tf.stack([
        tf.add_n([cross_entropy(labels, z) for z in model.exit_logits(c)]) for c in candidates
    ])
    best = tf.argmax(scores, axis=0, output_type=tf.int32)
    stacked = tf.stack(candidates, axis=1)
    return tf.gather(stacked, best, axis=1, batch_dims=1)


def attack_function(model, attack, objective, policy=None):
    """A compiled ``f(images, labels, seed) -> adversarial images`` for repeated batches."""
    check_objective(objective, model.num_exits, policy)

    @tf.function(reduce_retracing=True)
    def run(images, labels, seed):
        return generate(model, images, labels, attack, objective, policy, seed)

    return run
