"""Training recipes: the paper's schedule, the fast recipe, their optimizers and schedules.

Each reference model's recipes are in its entry of :data:`rdinet_tf.models.registry.MODELS`.
"""

import dataclasses
import math

import keras
import tensorflow as tf

from rdinet_tf import attacks
from rdinet_lite.errors import InputError


@dataclasses.dataclass(frozen=True)
class PaperRecipe:
    """The paper's training recipe of a model (the authors' training script), in iterations."""

    batch_size: int
    learning_rate: float
    weight_decay: float
    iterations: int
    decay_at: tuple  # iterations where the learning rate is multiplied by 0.1
    eps: float
    step_size: float
    train_attack_steps: int
    eval_attack_steps: int
    augment: bool


@keras.saving.register_keras_serializable(package="rdinet_tf")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The triangular one-cycle learning rate of fast adversarial training (Wong et al., ICLR 2020).

    Rises linearly from 0 to ``peak`` over the first ``peak_at`` fraction of
    ``total_steps``, then falls linearly back to 0 at ``total_steps`` (and
    stays there). Its position is the optimizer's iteration count, so a
    resumed run continues where it was.
    """

    def __init__(self, peak, total_steps, peak_at=0.5):
        if not (math.isfinite(peak) and peak > 0):
            raise InputError(f"OneCycle needs a finite peak > 0; got {peak}")
        if not (int(total_steps) == total_steps and total_steps >= 1):
            raise InputError(f"OneCycle needs total_steps >= 1 (a whole number); got {total_steps}")
        if not 0 < peak_at < 1:
            raise InputError(f"OneCycle needs 0 < peak_at < 1; got {peak_at}")
        self.peak, self.total_steps, self.peak_at = float(peak), int(total_steps), float(peak_at)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rise = self.peak_at * self.total_steps
        up = step / rise
        down = (self.total_steps - step) / (self.total_steps - rise)
        return self.peak * tf.clip_by_value(tf.minimum(up, down), 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "peak_at": self.peak_at}


@dataclasses.dataclass(frozen=True)
class FastRecipe:
    """A time-to-robust-accuracy recipe of a model: single-step training attack, one-cycle schedule, the guard.

    ``attack`` names the training attack (``"n_fgsm"`` or ``"fast_fgsm"``) at the
    paper recipe's eps; the optimizer is :class:`ReferenceSGD` (momentum 0.9,
    ``weight_decay``) under :class:`OneCycle` peaking at ``peak_learning_rate``
    half-way; training runs under :class:`rdinet_tf.training.guard.CatastrophicOverfittingGuard`.
    """

    epochs: int
    batch_size: int
    peak_learning_rate: float
    weight_decay: float
    attack: str

    def training_attack(self, eps):
        return {"n_fgsm": attacks.NFGSM, "fast_fgsm": attacks.fast_fgsm}[self.attack](eps)

    def optimizer(self, total_steps, learning_rate=None):
        peak = self.peak_learning_rate if learning_rate is None else learning_rate
        return ReferenceSGD(OneCycle(peak, total_steps), momentum=0.9, weight_decay=self.weight_decay)


def learning_rate_schedule(recipe, total_steps, learning_rate=None):
    """A :class:`PaperRecipe`'s step decay, its boundaries scaled from ``recipe.iterations`` to ``total_steps``."""
    base = recipe.learning_rate if learning_rate is None else learning_rate
    boundaries = [max(1, int(round(b / recipe.iterations * total_steps))) for b in recipe.decay_at]
    values = [base * 0.1**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


@keras.saving.register_keras_serializable(package="rdinet_tf")
class ReferenceSGD(keras.optimizers.Optimizer):
    """SGD with momentum and L2 weight decay exactly as ``torch.optim.SGD(lr, momentum, weight_decay=wd)``.

    Each step ``g = grad + wd * w``, ``buf = momentum * buf + g``, ``w -= lr * buf``:
    the decay goes through the momentum (about ten times stronger at momentum
    0.9 than Keras's decoupled ``weight_decay``), and a learning-rate drop
    scales the whole buffer at once (Keras's ``SGD`` keeps the old rate in its
    momentum). ``weight_decay`` here is that L2 term, applied to every
    trainable variable as the reference does; pass ``keras.optimizers.SGD``
    yourself for Keras's decoupled decay.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, weight_decay=0.0, name="reference_sgd", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not (0 <= momentum < 1 and weight_decay >= 0):
            raise InputError(f"ReferenceSGD needs 0 <= momentum < 1 and weight_decay >= 0; got momentum={momentum}, "
                             f"weight_decay={weight_decay}")
        self.momentum, self.l2_decay = float(momentum), float(weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = keras.ops.cast(learning_rate, variable.dtype)
        gradient = keras.ops.cast(gradient, variable.dtype) + self.l2_decay * variable
        buffer = self.momentums[self._get_variable_index(variable)]
        self.assign(buffer, buffer * self.momentum + gradient)
        self.assign_sub(variable, learning_rate * buffer)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.l2_decay)
        return config


def paper_optimizer(recipe, total_steps, learning_rate=None):
    """The paper's optimizer: :class:`ReferenceSGD`, momentum 0.9, a :class:`PaperRecipe`'s weight decay and step
    schedule."""
    return ReferenceSGD(learning_rate_schedule(recipe, total_steps, learning_rate), momentum=0.9,
                        weight_decay=recipe.weight_decay)
