"""RDI training: the custom Keras ``train_step`` with adversarial defenses.

:class:`RDITrainer` is mixed into :class:`rdinet_tf.models.MultiExitModel`, so
every multi-exit model trains with ``compile(...)`` + ``fit(...)``::

    model.compile(optimizer=keras.optimizers.SGD(0.033, momentum=0.9),
                  defense="max_average", attack=PGD(0.3, 0.01, 40))
    model.fit(train_dataset, epochs=10)

Each step makes the adversarial batch with ``tf.GradientTape`` (the defense
picks the attack objective: ``main`` = last exit, ``average``, ``max_average``;
``none`` trains on clean data only) and minimises L_RDI::

    sum_i w_i * ((1 - a) * CE(exit_i(x), y) + a * CE(exit_i(x_adv), y)),  a = 0.5

with clean and adversarial batches both forward-passed in training mode.

The slowdown defense (``compile(..., slowdown_weight=lam)``) adds
``lam * sum_{k<K} w_k * mean(c * CE(exit_k(x_slow), y))`` over the side exits,
c = 1 for the samples the last exit classifies correctly on clean input, where
``x_slow`` ascends the side exits' entropy (the ``"slowdown"`` attack): the
early exits learn to stay confident, and right, where an attacker would make
every input run the whole network.
"""

import dataclasses
import warnings

import keras
import numpy as np
import tensorflow as tf

from rdinet_tf import attacks
from rdinet_tf.errors import InputError

DEFENSES = ("none", "main", "average", "max_average")
_RDI_COMPILE_ARGS = ("defense", "attack", "exit_weights", "adversarial_weight", "seed", "slowdown_weight",
                     "slowdown_attack")


class RDITrainer:
    """Mixin for a multi-exit ``keras.Model``: adversarial ``train_step`` and per-exit metrics."""

    def compile(self, optimizer="sgd", defense="max_average", attack=None, exit_weights=None,
                adversarial_weight=0.5, seed=0, slowdown_weight=0.0, slowdown_attack=None, **kwargs):
        """Configure training.

        Args:
            optimizer: any Keras optimizer (or its name).
            defense: one of ``DEFENSES``: the attack objective of the training attack.
            attack: an attack method from :mod:`rdinet_tf.attacks` (e.g. ``PGD(...)``);
                required unless ``defense="none"``.
            exit_weights: per-exit loss weights w_i (default all 1).
            adversarial_weight: a, the weight of the adversarial term (0.5 in L_RDI).
            seed: seeds the attacks' random starts (step-dependent, reproducible).
            slowdown_weight: lam, the weight of the slowdown defense term (0: off).
            slowdown_attack: the attack method making the slowdown examples (default: ``attack``).
            **kwargs: passed to ``keras.Model.compile`` (e.g. ``jit_compile``).
        """
        if defense not in DEFENSES:
            raise InputError(f"unknown defense {defense!r}; choose one of {DEFENSES}")
        if defense != "none" and attack is None:
            raise InputError(f"defense {defense!r} needs an attack, e.g. attack=PGD(eps, step_size, steps)")
        weights = np.ones(self.num_exits) if exit_weights is None else np.asarray(exit_weights, float)
        if weights.shape != (self.num_exits,) or (weights < 0).any():
            raise InputError(
                f"exit_weights must be {self.num_exits} non-negative numbers (one per exit); got {exit_weights!r}"
            )
        if not 0 <= adversarial_weight <= 1:
            raise InputError(f"adversarial_weight must be in [0, 1]; got {adversarial_weight}")
        if not slowdown_weight >= 0:
            raise InputError(f"slowdown_weight must be >= 0; got {slowdown_weight}")
        slowdown_attack = (slowdown_attack or attack) if slowdown_weight > 0 else None
        if slowdown_weight > 0:
            if slowdown_attack is None:
                raise InputError("slowdown_weight needs an attack: pass slowdown_attack=PGD(eps, step_size, steps)")
            attacks.check_objective("slowdown", self.num_exits)
        self.defense, self.attack = defense, attack
        self.exit_weights = [float(w) for w in weights]
        self.adversarial_weight = float(adversarial_weight if defense != "none" else 0.0)
        self.attack_seed = int(seed)
        self.slowdown_weight, self.slowdown_attack = float(slowdown_weight), slowdown_attack
        self._loss_tracker_rdi = keras.metrics.Mean(name="loss")
        self._clean_accuracy = [keras.metrics.SparseCategoricalAccuracy(name=f"exit_{k + 1}_acc")
                                for k in range(self.num_exits)]
        self._adversarial_accuracy = (
            [] if defense == "none" else
            [keras.metrics.SparseCategoricalAccuracy(name=f"exit_{k + 1}_adv_acc")
             for k in range(self.num_exits)]
        )
        self._slowdown_tracker = [] if slowdown_attack is None else [keras.metrics.Mean(name="slowdown_loss")]
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        """Keras's compile config plus the RDI settings, so a loaded ``.keras`` model trains on as it was."""
        config = super().get_compile_config()
        if config and hasattr(self, "defense"):
            config.update(
                defense=self.defense, attack=attacks.method_config(self.attack), exit_weights=self.exit_weights,
                adversarial_weight=self.adversarial_weight, seed=self.attack_seed,
                slowdown_weight=self.slowdown_weight, slowdown_attack=attacks.method_config(self.slowdown_attack))
        return config

    def compile_from_config(self, config):
        """Compile again from :meth:`get_compile_config` (called by ``keras.models.load_model``)."""
        if "defense" not in config:  # saved before the RDI settings were part of the file
            warnings.warn("this model file holds no RDI compile settings: call compile() after loading",
                          stacklevel=2)
            return
        config = dict(config)
        for key in ("attack", "slowdown_attack"):
            config[key] = attacks.method_from_config(config.get(key))
        rdi = {key: config.pop(key) for key in _RDI_COMPILE_ARGS if key in config}
        self.compile(**keras.saving.deserialize_keras_object(config), **rdi)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        if not hasattr(self, "_loss_tracker_rdi"):
            return super().metrics
        return [self._loss_tracker_rdi, *self._clean_accuracy, *self._adversarial_accuracy,
                *self._slowdown_tracker]

    def rdi_loss(self, labels, clean_logits, adversarial_logits=None):
        """L_RDI for one batch (adversarial_logits None: clean terms only, full weight)."""
        clean_weight = 1.0 - self.adversarial_weight if adversarial_logits is not None else 1.0
        total = 0.0
        for k, weight in enumerate(self.exit_weights):
            term = clean_weight * tf.reduce_mean(attacks.cross_entropy(labels, clean_logits[k]))
            if adversarial_logits is not None:
                term += self.adversarial_weight * tf.reduce_mean(
                    attacks.cross_entropy(labels, adversarial_logits[k]))
            total += weight * term
        return total

    def slowdown_loss(self, labels, clean_logits, slowdown_side_logits):
        """The slowdown defense term: weighted side-exit CE on slowdown inputs.

        Averaged over the batch, counting only the samples whose clean input
        the last exit classifies correctly (so the term grows as the network
        learns); ``slowdown_side_logits`` holds the K-1 side exits' logits.
        """
        labels = tf.cast(labels, tf.int64)
        kept = tf.cast(tf.equal(tf.argmax(clean_logits[-1], axis=-1), labels), tf.float32)
        return tf.add_n([weight * tf.reduce_mean(kept * attacks.cross_entropy(labels, logits))
                         for weight, logits in zip(self.exit_weights, slowdown_side_logits)])

    def slowdown_batch(self, images, labels):
        """The slowdown examples for this step, or None without the slowdown term."""
        if self.slowdown_attack is None:
            return None
        seed = -1 - (self.attack_seed + tf.cast(self.optimizer.iterations, tf.int32))  # apart from the defense's
        return attacks.generate(self, images, labels, self.slowdown_attack, "slowdown", seed=seed)

    def adversarial_batch(self, images, labels):
        """The training attack's batch for this step, or None without a defense."""
        if self.defense == "none":
            return None
        seed = self.attack_seed + tf.cast(self.optimizer.iterations, tf.int32)
        return attacks.generate(self, images, labels, self.attack, self.defense, seed=seed)

    def train_step(self, data):
        images, labels = data[0], data[1]
        adversarial = self.adversarial_batch(images, labels)
        slowdown = self.slowdown_batch(images, labels)
        with tf.GradientTape() as tape:
            clean_logits = self(images, training=True)
            adversarial_logits = None if adversarial is None else self(adversarial, training=True)
            loss = self.rdi_loss(labels, clean_logits, adversarial_logits)
            if slowdown is not None:
                slowdown_term = self.slowdown_loss(
                    labels, clean_logits, self.exit_logits(slowdown, range(self.num_exits - 1), training=True))
                loss += self.slowdown_weight * slowdown_term
            regularization = tf.add_n(self.losses) if self.losses else 0.0
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss((loss + regularization) / replicas)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self._update_metrics(loss, labels, clean_logits, adversarial_logits)
        if slowdown is not None:
            self._slowdown_tracker[0].update_state(slowdown_term, sample_weight=tf.shape(labels)[0])
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        images, labels = data[0], data[1]
        clean_logits = self(images, training=False)
        self._update_metrics(self.rdi_loss(labels, clean_logits), labels, clean_logits, None)
        training_only = [*self._adversarial_accuracy, *self._slowdown_tracker]
        return {m.name: m.result() for m in self.metrics if m not in training_only}

    def _update_metrics(self, loss, labels, clean_logits, adversarial_logits):
        self._loss_tracker_rdi.update_state(loss, sample_weight=tf.shape(labels)[0])
        for metric, logits in zip(self._clean_accuracy, clean_logits):
            metric.update_state(labels, logits)
        if adversarial_logits is not None:
            for metric, logits in zip(self._adversarial_accuracy, adversarial_logits):
                metric.update_state(labels, logits)


@dataclasses.dataclass(frozen=True)
class Preset:
    """The reference training recipe of a model (spec section 2), in iterations."""

    dataset: str
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


PRESETS = {
    "smallcnn": Preset("mnist", 256, 0.033, 5e-4, 13_100, (11_700, 12_900), 0.3, 0.01, 40, 40, False),
    "resnet38": Preset("cifar10", 128, 0.1, 1e-4, 64_000, (32_000, 48_000), 8 / 255, 2 / 255, 10, 20, True),
    "mobilenetv2": Preset("cifar10", 128, 0.1, 1e-4, 64_000, (32_000, 48_000), 8 / 255, 2 / 255, 10, 20, True),
}


def learning_rate_schedule(preset, total_steps, learning_rate=None):
    """The preset's step decay, its boundaries scaled from ``preset.iterations`` to ``total_steps``."""
    base = preset.learning_rate if learning_rate is None else learning_rate
    boundaries = [max(1, int(round(b / preset.iterations * total_steps))) for b in preset.decay_at]
    values = [base * 0.1**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def preset_optimizer(preset, total_steps, learning_rate=None):
    """SGD with momentum 0.9 and the preset's weight decay and step schedule."""
    return keras.optimizers.SGD(learning_rate_schedule(preset, total_steps, learning_rate),
                                momentum=0.9, weight_decay=preset.weight_decay)
