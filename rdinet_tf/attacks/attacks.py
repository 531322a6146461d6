"""Adversarial attacks on multi-exit models: an attack method times an exit objective.

Methods (L-inf unless noted): :class:`PGD` (random start, step, steps),
:func:`fgsm`, :func:`fast_fgsm` (random start, step 1.25 eps: the CPU-budget
training attack), :class:`NFGSM` (N-FGSM: noise 2 eps, step eps, no projection;
the fast recipe's training attack), :class:`WRM` (L2 Lagrangian ascent) and
:class:`RandomNoise`.

Objectives, by name (exits are named as the model's outputs, 1-based):

* ``"exit_k"``: cross-entropy of exit k alone; only stages up to k are run.
* ``"main"``: the last exit (the backbone's own classifier).
* ``"average"``: mean cross-entropy over all exits.
* ``"max_average"``: K independent attacks, attack k on exit k alone, then for
  each sample the candidate with the largest summed per-exit cross-entropy.
* ``"random_average"``: cross-entropy averaged with random exit weights.
* ``"routing"``: at every step each sample ascends the cross-entropy of the
  exit the entropy policy would route it to (needs a policy).
* ``"slowdown"``: the mean softmax entropy of the side exits (labels unused):
  pushes every side exit towards uniform so that no input leaves early and the
  adaptive model pays its full cost. :func:`universal_slowdown` trains one such
  perturbation for a whole image set.

Objectives that know the thresholds (need a policy; see :func:`exit_hijack_loss`
and :func:`threshold_slowdown_loss`):

* ``"exit_hijack"``: K-1 attacks, attack k makes side exit k confident in a
  wrong class while exits before k stay above their thresholds, so the input
  leaves at exit k with a wrong answer; for each sample the candidate whose
  routed exit has the largest cross-entropy.
* ``"threshold_slowdown"``: a margin loss on each side exit's entropy minus its
  threshold (labels unused): lifts every side exit just above its threshold
  instead of towards uniform, so the effort goes to the exits that would
  still let the input leave.

The exit objectives score each exit's logits with ``logit_loss`` (default the
cross-entropy; :mod:`rdinet_tf.attacks.autoattack` passes DLR and margin
losses). The building blocks of every method are public: :func:`iterate` (the
graph step loop), :func:`loss_and_gradient` and :func:`project_linf`.

Everything is batched TensorFlow, usable inside ``tf.function``; attacks run
the model in inference mode and never change its weights. The same integer
``seed`` gives the same adversarial batch. At any precision, images,
adversarial images and losses are float32 (a mixed-precision network's logits
are, see :mod:`rdinet_tf.architecture.network`) and the input gradient is
loss-scaled against float16 underflow (:func:`loss_and_gradient`).
"""

import dataclasses
import math

import keras
import tensorflow as tf

from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import entropy

OBJECTIVES = ("main", "average", "max_average", "random_average", "routing", "slowdown", "exit_hijack",
              "threshold_slowdown")
POLICY_OBJECTIVES = ("routing", "exit_hijack", "threshold_slowdown")  # these need the thresholds
SIDE_EXIT_OBJECTIVES = ("slowdown", "exit_hijack", "threshold_slowdown")  # these need side exits
# The threshold-aware objectives aim this far past a threshold (a fraction of it), so that a sample
# they move across it is not within a rounding error of it.
THRESHOLD_MARGIN = 0.1
# Loss scale of the attacks' input gradients (:func:`loss_and_gradient`): Keras's initial
# mixed_float16 loss scale.
LOSS_SCALE = 2.0**15


class AttackMethod:
    """Base of the attack methods: frozen dataclasses whose fields are their Keras config.

    A method has ``perturb(loss_fn, images, labels, seed) -> adversarial images``,
    ascending the per-sample ``loss_fn(x, labels) -> (N,)``.
    """

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _check_eps(method, eps):
    if not (math.isfinite(eps) and 0 <= eps <= 1):
        raise InputError(f"{method} needs an eps in [0, 1] (pixels are in [0, 1]); got eps={eps}")


def uniform_noise(images, seed, eps):
    """Noise uniform in [-eps, eps], shaped like ``images``, that depends only on the global batch.

    Inside a ``tf.distribute`` replica holding one even share of a global
    batch, the noise is this replica's slice of the noise the whole batch gets
    on one device, so a step trains on the same examples however many
    replicas share it.
    """
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    if replicas == 1:
        return tf.random.stateless_uniform(tf.shape(images), seed, -eps, eps)
    shape = tf.shape(images)
    start = tf.cast(context.replica_id_in_sync_group, tf.int32) * shape[0]
    whole = tf.random.stateless_uniform(tf.concat([[shape[0] * replicas], shape[1:]], 0), seed, -eps, eps)
    return whole[start:start + shape[0]]


@keras.saving.register_keras_serializable(package="rdinet_tf")
@dataclasses.dataclass(frozen=True)
class PGD(AttackMethod):
    """L-inf projected gradient ascent; ``steps=1`` without random start is FGSM."""

    eps: float
    step_size: float
    steps: int
    random_start: bool = True
    name: str = "pgd"

    def __post_init__(self):
        _check_eps(self.name, self.eps)
        if not (math.isfinite(self.step_size) and self.step_size >= 0 and self.steps >= 1):
            raise InputError(
                f"{self.name} needs step_size >= 0 and steps >= 1; got step_size={self.step_size}, "
                f"steps={self.steps}"
            )

    def perturb(self, loss_fn, images, labels, seed):
        """Ascend ``loss_fn(x, labels) -> (N,)`` within the eps-ball around ``images``."""
        images = tf.convert_to_tensor(images, tf.float32)
        adversarial = images
        if self.random_start:
            adversarial = tf.clip_by_value(images + uniform_noise(images, seed, self.eps), 0.0, 1.0)

        def step(_, x):
            x = x + self.step_size * tf.sign(loss_and_gradient(loss_fn, x, labels)[1])
            return project_linf(x, images, self.eps)

        return iterate(step, adversarial, self.steps)


def scaled_pgd(eps, steps):
    """PGD of ``steps`` steps of 2.5 eps / steps with a random start (Madry et al.'s step rule: the steps can
    cross the eps-ball and back, whatever their number)."""
    return PGD(eps, 2.5 * eps / steps, steps)


def fgsm(eps):
    """Fast gradient sign method: one step of size eps from the clean image."""
    return PGD(eps, eps, 1, random_start=False, name="fgsm")


def fast_fgsm(eps):
    """FGSM with a random start and step 1.25 eps ("fast" adversarial training)."""
    return PGD(eps, 1.25 * eps, 1, random_start=True, name="fast_fgsm")


@keras.saving.register_keras_serializable(package="rdinet_tf")
@dataclasses.dataclass(frozen=True)
class NFGSM(AttackMethod):
    """N-FGSM (de Jorge et al., NeurIPS 2022): one signed-gradient step from a strongly noised image.

    ``x + noise + step_size * sign(grad)`` with noise uniform in
    [-noise, noise], clipped to [0, 1] only: no projection onto the eps-ball,
    so the training perturbation reaches ``noise + step_size`` (3 eps with the
    defaults). The large noise keeps single-step training from catastrophic
    overfitting without extra gradient computations. ``eps`` names the radius
    the defense is meant for; ``noise`` and ``step_size`` default to 2 eps
    and eps (the paper's settings).
    """

    eps: float
    noise: float = None
    step_size: float = None
    name: str = "n_fgsm"

    def __post_init__(self):
        _check_eps(self.name, self.eps)
        object.__setattr__(self, "noise", 2.0 * self.eps if self.noise is None else float(self.noise))
        object.__setattr__(self, "step_size", self.eps if self.step_size is None else float(self.step_size))
        if not (math.isfinite(self.noise) and self.noise >= 0 and math.isfinite(self.step_size)
                and self.step_size >= 0):
            raise InputError(f"n_fgsm needs finite noise >= 0 and step_size >= 0; got noise={self.noise}, "
                             f"step_size={self.step_size}")

    def perturb(self, loss_fn, images, labels, seed):
        images = tf.convert_to_tensor(images, tf.float32)
        noised = tf.clip_by_value(images + uniform_noise(images, seed, self.noise), 0.0, 1.0)
        step = self.step_size * tf.sign(loss_and_gradient(loss_fn, noised, labels)[1])
        return tf.stop_gradient(tf.clip_by_value(noised + step, 0.0, 1.0))


@keras.saving.register_keras_serializable(package="rdinet_tf")
@dataclasses.dataclass(frozen=True)
class WRM(AttackMethod):
    """Wasserstein robust method: ascend eps * CE - 0.5 ||x_adv - x||_2^2 with step 1/sqrt(t+2).

    Unconstrained in L-inf (only clipped to [0, 1]); ``eps`` weighs the loss
    against the L2 transport cost, as in the reference.
    """

    eps: float
    steps: int = 15
    name: str = "wrm"

    def __post_init__(self):
        if not (math.isfinite(self.eps) and self.eps >= 0 and self.steps >= 1):
            raise InputError(f"wrm needs eps >= 0 and steps >= 1; got eps={self.eps}, steps={self.steps}")

    def perturb(self, loss_fn, images, labels, seed):
        del seed  # deterministic: starts from the clean image
        images = tf.convert_to_tensor(images, tf.float32)

        def lagrangian(x, y):
            transport = 0.5 * tf.reduce_sum(tf.square(x - images), axis=[1, 2, 3])
            return self.eps * loss_fn(x, y) - transport

        def step(t, x):
            learning_rate = 1.0 / tf.sqrt(tf.cast(t, tf.float32) + 2.0)
            return tf.clip_by_value(x + learning_rate * loss_and_gradient(lagrangian, x, labels)[1], 0.0, 1.0)

        return iterate(step, images, self.steps)


@keras.saving.register_keras_serializable(package="rdinet_tf")
@dataclasses.dataclass(frozen=True)
class RandomNoise(AttackMethod):
    """Uniform noise in the L-inf eps-ball: the baseline every attack must beat."""

    eps: float
    name: str = "random_noise"

    def __post_init__(self):
        _check_eps(self.name, self.eps)

    def perturb(self, loss_fn, images, labels, seed):
        del loss_fn, labels
        images = tf.convert_to_tensor(images, tf.float32)
        return tf.clip_by_value(images + uniform_noise(images, seed, self.eps), 0.0, 1.0)


def universal_slowdown(model, images, eps, steps=100, step_size=None, batch_size=128, seed=0):
    """One L-inf perturbation (H, W, C) that raises the side-exit entropy of a whole image set.

    ``steps`` sign-gradient ascent steps of the summed ``"slowdown"`` loss, each
    on the next batch of ``images`` (cycling through the set), from a random
    start, kept in [-eps, eps]; step ``eps / 10`` unless given. Apply it as
    ``clip(x + perturbation, 0, 1)`` to any image of the model's shape.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    model.check_images(images)
    loss_fn = objective_loss(model, "slowdown")
    step_size = eps / 10 if step_size is None else step_size
    count = int(images.shape[0])
    batch = min(batch_size, count)
    start = tf.random.stateless_uniform((1, *model.image_shape), [seed, 0], -eps, eps)

    def step(t, perturbation):
        batch_images = tf.gather(images, (t * batch + tf.range(batch)) % count)
        _, gradient = loss_and_gradient(
            lambda delta, _: loss_fn(tf.clip_by_value(batch_images + delta, 0.0, 1.0), None), perturbation, None)
        return tf.clip_by_value(perturbation + step_size * tf.sign(gradient), -eps, eps)

    return tf.function(lambda: iterate(step, start, steps))()[0]


def iterate(step, state, steps):
    """``state = step(t, state)`` for t in 0..steps-1, as a graph loop; ``state`` may be nested.

    No gradient flows out.
    """
    _, result = tf.while_loop(lambda t, _: t < steps, lambda t, x: (t + 1, step(t, x)),
                              (tf.constant(0), state))
    return tf.nest.map_structure(tf.stop_gradient, result)


def project_linf(x, images, eps):
    """``x`` projected onto the L-inf ``eps``-ball around ``images``, then onto [0, 1]."""
    return tf.clip_by_value(tf.clip_by_value(x, images - eps, images + eps), 0.0, 1.0)


def loss_and_gradient(loss_fn, images, labels):
    """Per-sample ``loss_fn(images, labels)`` and the gradient of its sum with respect to ``images``.

    Every attack's gradient comes from here, loss-scaled: the sum is multiplied
    by :data:`LOSS_SCALE` before differentiation and the gradient divided by it
    afterwards. A power of two, this is exact in float32 and bfloat16;
    in a ``mixed_float16`` model it keeps small backward values from
    underflowing to zero. Entries that overflow (not finite) are 0: the attack
    leaves those pixels alone for one step, as Keras's ``LossScaleOptimizer``
    skips a training step, and nothing non-finite reaches the images.
    """
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = loss_fn(images, labels)
        total = tf.reduce_sum(loss) * LOSS_SCALE
    gradient = tape.gradient(total, images) / LOSS_SCALE
    return loss, tf.where(tf.math.is_finite(gradient), gradient, tf.zeros_like(gradient))


def cross_entropy(labels, logits):
    """Per-sample cross-entropy from logits."""
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def side_exit_entropy(side_logits):
    """Per-sample mean softmax entropy over a list of side exits' logits: the slowdown loss."""
    return tf.add_n([entropy(logits) for logits in side_logits]) / len(side_logits)


def check_objective(objective, num_exits, policy=None):
    """The 0-based exit of an ``"exit_k"``/``"main"`` objective, or None for the others."""
    if objective == "main":
        return num_exits - 1
    if isinstance(objective, str) and objective.startswith("exit_") and objective[len("exit_"):].isdigit():
        if 1 <= int(objective[len("exit_"):]) <= num_exits:
            return int(objective[len("exit_"):]) - 1
    elif objective in OBJECTIVES:
        if objective in POLICY_OBJECTIVES and policy is None:
            raise InputError(f"the {objective!r} objective needs an exit policy: pass policy=ExitPolicy(...)")
        if objective in SIDE_EXIT_OBJECTIVES and num_exits < 2:
            raise InputError(f"the {objective!r} objective needs a model with side exits (2 or more exits)")
        return None
    raise InputError(
        f"unknown attack objective {objective!r}; choose exit_1..exit_{num_exits} or one of {OBJECTIVES}"
    )


def objective_loss(model, objective, policy=None, seed=(0, 0), logit_loss=cross_entropy):
    """Per-sample loss ``f(x, y) -> (N,)`` that an attack with this objective ascends.

    ``logit_loss(labels, logits) -> (N,)`` scores one exit's logits (not used by ``"slowdown"``).
    """
    exit_index = check_objective(objective, model.num_exits, policy)
    if exit_index is not None:
        return lambda x, y: logit_loss(y, model.exit_logits(x, [exit_index])[0])
    if objective == "average":
        return lambda x, y: tf.add_n([logit_loss(y, z) for z in model.exit_logits(x)]) / model.num_exits
    if objective == "random_average":
        weights = tf.random.stateless_uniform([model.num_exits], seed)
        weights = weights / tf.reduce_sum(weights)
        return lambda x, y: tf.add_n(
            [w * logit_loss(y, z) for w, z in zip(tf.unstack(weights), model.exit_logits(x))])
    if objective == "routing":
        return lambda x, y: logit_loss(y, policy.route(model.exit_logits(x))[0])
    if objective == "slowdown":
        return lambda x, y: side_exit_entropy(model.exit_logits(x, range(model.num_exits - 1)))
    if objective == "threshold_slowdown":
        return threshold_slowdown_loss(model, policy)
    raise InputError(f"objective {objective!r} is a selection of attacks, not a loss")


def exit_hijack_loss(model, policy, exit_index):
    """Per-sample loss that makes ``model`` leave at side exit ``exit_index`` with a wrong answer.

    Minus the cross-entropy of exit k towards its strongest wrong class (ascending it
    makes exit k confident and wrong: its entropy falls below T_k), minus, for each
    earlier exit j, ``max(T_j (1 + margin) - H_j, 0)`` (they stay above their thresholds).
    """
    thresholds = tf.cast(policy.thresholds[:exit_index], tf.float32) * (1 + THRESHOLD_MARGIN)

    def loss(x, y):
        logits = model.exit_logits(x, range(exit_index + 1))
        target = logits[-1]
        true_class = tf.one_hot(tf.cast(y, tf.int32), tf.shape(target)[-1], dtype=target.dtype)
        wrong = tf.argmax(target - 1e9 * true_class, axis=-1, output_type=tf.int32)
        value = -cross_entropy(wrong, target)
        for j, earlier in enumerate(logits[:-1]):
            value -= tf.nn.relu(thresholds[j] - entropy(earlier))
        return value

    return loss


def threshold_slowdown_loss(model, policy):
    """Per-sample mean over side exits of ``min(H_k - T_k, margin * T_k)``: each exit lifted just past T_k."""
    thresholds = tf.constant(policy.thresholds, tf.float32)

    def loss(x, y):
        side_logits = model.exit_logits(x, range(model.num_exits - 1))
        return tf.add_n([
            tf.minimum(entropy(logits) - thresholds[k], THRESHOLD_MARGIN * thresholds[k])
            for k, logits in enumerate(side_logits)
        ]) / len(side_logits)

    return loss


def generate(model, images, labels, attack, objective, policy=None, seed=0, logit_loss=cross_entropy):
    """Adversarial images for ``model`` by ``attack`` with an exit ``objective`` (see module doc).

    Called eagerly, ``images`` are checked (shape, float pixels in [0, 1]); inside a graph they are
    tensors the caller checked where they entered.
    """
    exit_index = check_objective(objective, model.num_exits, policy)
    if tf.executing_eagerly():
        images = model.check_images(images)
    seed = tf.cast(seed, tf.int32)
    if objective == "exit_hijack":
        candidates = [attack.perturb(exit_hijack_loss(model, policy, k), images, labels,
                                     tf.stack([seed, model.num_exits + k + 1]))
                      for k in range(model.num_exits - 1)]
        return select_routed(model, policy, candidates, labels)
    if objective != "max_average":
        # The attack on exit k starts like max-average's k-th candidate (same seed), so a
        # report can build max-average from the single-exit attacks it already ran.
        stream = 0 if exit_index is None else exit_index + 1
        loss_fn = objective_loss(model, objective, policy, tf.stack([seed, -1]), logit_loss)
        return attack.perturb(loss_fn, images, labels, tf.stack([seed, stream]))
    candidates = [
        attack.perturb(objective_loss(model, f"exit_{k + 1}", logit_loss=logit_loss), images, labels,
                       tf.stack([seed, k + 1]))
        for k in range(model.num_exits)
    ]
    return select_max_average(model, candidates, labels)


def select_max_average(model, candidates, labels):
    """For each sample, the candidate with the largest cross-entropy summed over all exits."""
    return _pick_highest(candidates, [
        tf.add_n([cross_entropy(labels, z) for z in model.exit_logits(c)]) for c in candidates
    ])


def select_routed(model, policy, candidates, labels):
    """For each sample, the candidate whose routed exit (under ``policy``) has the largest cross-entropy."""
    return _pick_highest(candidates, [cross_entropy(labels, policy.route(model.exit_logits(c))[0])
                                      for c in candidates])


def _pick_highest(candidates, scores):
    """Per sample, the candidate image with the highest of its per-candidate ``scores`` (each (N,))."""
    best = tf.argmax(tf.stack(scores), axis=0, output_type=tf.int32)
    return tf.gather(tf.stack(candidates, axis=1), best, axis=1, batch_dims=1)


def attack_function(model, attack, objective, policy=None):
    """A compiled ``f(images, labels, seed) -> adversarial images`` for repeated batches."""
    check_objective(objective, model.num_exits, policy)

    @tf.function(reduce_retracing=True)
    def run(images, labels, seed):
        return generate(model, images, labels, attack, objective, policy, seed)

    return run
