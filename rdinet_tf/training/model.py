"""RDI training: :class:`MultiExitModel`, the multi-exit network with the adversarial ``train_step``.

Every model of :func:`rdinet_tf.models.build` trains with ``compile(...)`` +
``fit(...)``::

    model.compile(optimizer=keras.optimizers.SGD(0.033, momentum=0.9),
                  defense="max_average", attack=PGD(0.3, 0.01, 40))
    model.fit(train_dataset, epochs=10)

Each step makes the adversarial batch with ``tf.GradientTape`` (the defense
picks the attack objective: ``main`` = last exit, ``average``, ``max_average``;
``none`` trains on clean data only) and minimises L_RDI (:func:`rdi_loss`)::

    sum_i w_i * ((1 - a) * CE(exit_i(x), y) + a * CE(exit_i(x_adv), y)),  a = 0.5

with clean and adversarial batches both forward-passed in training mode.

Exit-diversity distillation (``compile(..., distillation=NeoKD(...))``, see
:mod:`rdinet_tf.training.distillation`) adds NEO-KD's neighbour and exit-wise orthogonal
distillation terms on the adversarial batch.

The slowdown defense (``compile(..., slowdown_weight=lam)``) adds
``lam * sum_{k<K} w_k * mean(c * CE(exit_k(x_slow), y))`` over the side exits,
c = 1 for the samples the last exit classifies correctly on clean input, where
``x_slow`` ascends the side exits' entropy (the ``"slowdown"`` attack): the
early exits learn to stay confident, and right, where an attacker would make
every input run the whole network.

Sample weights (``fit(x, y, sample_weight=w)`` or a dataset of
``(x, y, w)``) weight every term and every metric, with Keras's
``"sum_over_batch_size"`` reduction: ``sum(w * CE) / batch size``.

Mixed precision: :func:`set_precision` before building a model. The layers
then compute in 16 bits, the logits, L_RDI and the attacks in float32; under
``mixed_float16`` ``compile`` wraps the optimizer in Keras's
``LossScaleOptimizer`` (``train_step`` scales the loss through it).
"""

import inspect
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from rdinet_tf import attacks
from rdinet_tf.architecture.network import MultiExitNetwork
from rdinet_tf.catalog import DEFENSES, POLICY_DEFENSES
from rdinet_tf.training.distillation import NeoKD
from rdinet_tf.training.losses import abstention_loss, check_exit_weights, rdi_loss, weighted_cross_entropy
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import ExitPolicy, TrainingThresholds

# Defenses whose training attack knows the exit policy: they read the thresholds the model follows in training.
# The candidates of the per-sample worst-case defense: the paper's strongest form and the policy-aware ones.
WORST_CASE_OBJECTIVES = ("max_average", "routing", "exit_hijack")

_RDI_COMPILE_ARGS = ("defense", "attack", "exit_weights", "adversarial_weight", "seed", "slowdown_weight",
                     "slowdown_attack", "distillation", "abstention_weight", "training_thresholds")
# keras.Model.compile arguments that L_RDI replaces: refused with a pointer to what to use instead.
_REFUSED_COMPILE_ARGS = {
    "loss": "the loss is L_RDI; choose it with defense=..., exit_weights=... and adversarial_weight=...",
    "loss_weights": "weight the exits with exit_weights=[w_1, ..., w_K]",
    "weighted_metrics": "metrics=[...] are already weighted by the sample weights",
}


_SEED_STRIDE = 7919  # apart the random starts of the worst-case defense's candidates


def nonfinite_weight(model):
    """The path of the first weight of the Keras ``model`` holding a NaN or an infinity, or None."""
    for variable in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(variable))
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return variable.path
    return None


def divergence(model, logs=None):
    """What is not finite at an epoch's end: the first NaN or infinite value of ``logs`` (``"loss is nan"``),
    else of ``model``'s weights; None when everything is finite."""
    for name, value in (logs or {}).items():
        if not math.isfinite(float(value)):
            return f"{name} is {float(value)}"
    path = nonfinite_weight(model)
    return None if path is None else f"the weights hold NaN or infinite values (in {path})"


def _keras_build_hook_parameters():
    """The parameters of Keras's private ``Model._maybe_symbolic_build`` (None where Keras has no such method).

    Keras 3's TensorFlow trainer (``keras/src/backend/tensorflow/trainer.py``, checked up to 3.15) calls
    ``self._maybe_symbolic_build(iterator=...)`` or ``(data_batch=...)`` before ``fit``, ``evaluate``,
    ``train_on_batch`` and ``test_on_batch``: under a ``tf.distribute`` strategy it takes a batch from the
    training iterator to build the model, its metrics and the optimizer on, and reduces it with
    ``strategy.reduce("MEAN", ...)``, which fails for ``MultiWorkerMirroredStrategy`` inputs.
    """
    hook = getattr(keras.Model, "_maybe_symbolic_build", None)
    return None if hook is None else tuple(inspect.signature(hook).parameters)[1:]


# MultiExitModel replaces that private hook only where it is the one described above.
_REPLACES_KERAS_BUILD_HOOK = (keras.version().split(".")[0] == "3"
                              and _keras_build_hook_parameters() == ("iterator", "data_batch"))
if not _REPLACES_KERAS_BUILD_HOOK:
    warnings.warn(f"Keras {keras.version()} has no private Model._maybe_symbolic_build(iterator, data_batch) "
                  "as Keras 3.15 has: MultiExitModel leaves the build before fit to Keras, which under a "
                  "tf.distribute strategy may start training one batch late or fail to build", stacklevel=2)


@keras.saving.register_keras_serializable(package="rdinet_tf")
class MultiExitModel(MultiExitNetwork):
    """A :class:`MultiExitNetwork` that trains with the RDI defenses through ``compile`` and ``fit``."""

    def compile(self, optimizer="sgd", defense="max_average", attack=None, exit_weights=None,
                adversarial_weight=0.5, seed=0, slowdown_weight=0.0, slowdown_attack=None, distillation=None,
                abstention_weight=0.0, training_thresholds=None, metrics=None, **kwargs):
        """Configure training.

        Args:
            optimizer: any Keras optimizer (or its name).
            defense: one of ``DEFENSES``: the attack objective of the training attack. The policy-aware
                ones attack the exit policy the model follows in training (its ``training_thresholds``):
                ``"routing"`` (each step ascends the loss of the exit the policy takes), ``"exit_hijack"``
                (makes a side exit confident and wrong while earlier exits stay above their thresholds)
                and ``"worst_case"`` (per sample, the candidate of ``max_average``, ``routing`` and
                ``exit_hijack`` whose routed exit has the largest cross-entropy).
            attack: an attack method from :mod:`rdinet_tf.attacks.attacks` (e.g. ``PGD(...)``);
                required unless ``defense="none"``.
            exit_weights: per-exit loss weights w_i (default all 1).
            adversarial_weight: a, the weight of the adversarial term (0.5 in L_RDI).
            seed: seeds the attacks' random starts (step-dependent, reproducible).
            slowdown_weight: lam, the weight of the slowdown defense term (0: off).
            slowdown_attack: the attack method making the slowdown examples (default: ``attack``).
            distillation: None, or a :class:`rdinet_tf.training.distillation.NeoKD` (``"neo_kd"``: its default
                weights): NEO-KD's distillation terms on the defense's adversarial batch.
            abstention_weight: mu, the weight of the abstention term (0: off): side exits learn to stay
                uncertain on the adversarial inputs they get wrong (see :func:`abstention_loss`), so an
                attacker cannot make an early exit leave with a wrong answer.
            training_thresholds: the side-exit thresholds the policy-aware defenses attack (K-1 entropies;
                0 closes an exit); default: the model's ``exit_policy`` if it has one, else every exit
                closed until :class:`FollowThresholds` calibrates them on held-out data.
            metrics: Keras metrics (names or objects) computed on the clean batch for every
                exit, reported as ``exit_k_<name>``.
            **kwargs: passed to ``keras.Model.compile`` (e.g. ``jit_compile``,
                ``steps_per_execution``); ``loss``, ``loss_weights`` and ``weighted_metrics``
                are refused (L_RDI is the loss).
        """
        for name in _REFUSED_COMPILE_ARGS:
            if kwargs.get(name) is not None:
                raise InputError(f"compile({name}=...) is not supported by a MultiExitModel: "
                                 f"{_REFUSED_COMPILE_ARGS[name]}")
            kwargs.pop(name, None)
        if defense not in DEFENSES:
            raise InputError(f"unknown defense {defense!r}; choose one of {DEFENSES}")
        if defense != "none" and attack is None:
            raise InputError(f"defense {defense!r} needs an attack, e.g. attack=PGD(eps, step_size, steps)")
        weights = check_exit_weights(exit_weights, self.num_exits)
        if not 0 <= adversarial_weight <= 1:
            raise InputError(f"adversarial_weight must be in [0, 1]; got {adversarial_weight}")
        if not slowdown_weight >= 0:
            raise InputError(f"slowdown_weight must be >= 0; got {slowdown_weight}")
        slowdown_attack = (slowdown_attack or attack) if slowdown_weight > 0 else None
        if isinstance(distillation, str) and distillation == "neo_kd":
            distillation = NeoKD()
        if distillation is not None and not isinstance(distillation, NeoKD):
            raise InputError(f"distillation must be None, 'neo_kd' or a NeoKD(...); got {distillation!r}")
        if distillation is not None and defense == "none":
            raise InputError("distillation distils onto the adversarial batch: give a defense other than 'none'")
        if not (math.isfinite(abstention_weight) and abstention_weight >= 0):
            raise InputError(f"abstention_weight must be >= 0; got {abstention_weight}")
        if abstention_weight > 0 and (defense == "none" or self.num_exits < 2):
            raise InputError("abstention_weight acts on the side exits' adversarial outputs: give a defense "
                             "other than 'none' and a model with side exits")
        if training_thresholds is None:
            policy = getattr(self, "exit_policy", None)
            training_thresholds = policy.thresholds if policy is not None else [0.0] * (self.num_exits - 1)
        if slowdown_weight > 0:
            if slowdown_attack is None:
                raise InputError("slowdown_weight needs an attack: pass slowdown_attack=PGD(eps, step_size, steps)")
            attacks.check_objective("slowdown", self.num_exits)
        self.defense, self.attack = defense, attack
        self.exit_weights = weights
        self.adversarial_weight = float(adversarial_weight if defense != "none" else 0.0)
        self.attack_seed = int(seed)
        self.slowdown_weight, self.slowdown_attack = float(slowdown_weight), slowdown_attack
        self.distillation = distillation
        self.abstention_weight = float(abstention_weight)
        self.training_policy = TrainingThresholds(training_thresholds)
        self._metric_specs = list(metrics or [])
        self._rdi_metrics = _RDIMetrics(self.num_exits, defense != "none", slowdown_attack is not None,
                                        distillation is not None, abstention_weight > 0, self._metric_specs)
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        """Keras's compile config plus the RDI settings, so a loaded ``.keras`` model trains on as it was."""
        config = super().get_compile_config()
        if config and hasattr(self, "defense"):
            serialize = keras.saving.serialize_keras_object
            config.update(
                defense=self.defense, attack=serialize(self.attack), exit_weights=self.exit_weights,
                adversarial_weight=self.adversarial_weight, seed=self.attack_seed,
                slowdown_weight=self.slowdown_weight, slowdown_attack=serialize(self.slowdown_attack),
                distillation=serialize(self.distillation), abstention_weight=self.abstention_weight,
                training_thresholds=self.training_policy.values().tolist(), metrics=serialize(self._metric_specs))
        return config

    def compile_from_config(self, config):
        """Compile again from :meth:`get_compile_config` (called by ``keras.models.load_model``)."""
        if "defense" not in config:  # saved before the RDI settings were part of the file
            warnings.warn("this model file holds no RDI compile settings: call compile() after loading",
                          stacklevel=2)
            return
        config = dict(config)
        rdi = {key: config.pop(key) for key in _RDI_COMPILE_ARGS if key in config}
        for key in ("attack", "slowdown_attack", "distillation"):
            rdi[key] = keras.saving.deserialize_keras_object(rdi.get(key))
        self.compile(**keras.saving.deserialize_keras_object(config), **rdi)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        if not hasattr(self, "_rdi_metrics"):
            return super().metrics
        return self._rdi_metrics.all

    def rdi_loss(self, labels, clean_logits, adversarial_logits=None, sample_weight=None):
        """L_RDI of one batch with this model's exit and adversarial weights (see :func:`rdi_loss`)."""
        return rdi_loss(labels, clean_logits, adversarial_logits, self.exit_weights, self.adversarial_weight,
                        sample_weight)

    def slowdown_loss(self, labels, clean_logits, slowdown_side_logits, sample_weight=None):
        """The slowdown defense term: weighted side-exit CE on slowdown inputs.

        Averaged over the batch, counting only the samples whose clean input
        the last exit classifies correctly (so the term grows as the network
        learns); ``slowdown_side_logits`` holds the K-1 side exits' logits.
        """
        labels = tf.cast(labels, tf.int64)
        kept = tf.cast(tf.equal(tf.argmax(clean_logits[-1], axis=-1), labels), tf.float32)
        if sample_weight is not None:
            kept *= tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        return tf.add_n([weight * weighted_cross_entropy(labels, logits, kept)
                         for weight, logits in zip(self.exit_weights, slowdown_side_logits)])

    def slowdown_batch(self, images, labels):
        """The slowdown examples for this step, or None without the slowdown term."""
        if self.slowdown_attack is None:
            return None
        seed = -1 - self._step_seed()  # apart from the defense's
        return attacks.generate(self, images, labels, self.slowdown_attack, "slowdown", seed=seed)

    def adversarial_batch(self, images, labels):
        """The training attack's batch for this step, or None without a defense."""
        if self.defense == "none":
            return None
        if self.defense == "worst_case":
            candidates = [attacks.generate(self, images, labels, self.attack, objective, self.training_policy,
                                           self._step_seed() + i * _SEED_STRIDE)
                          for i, objective in enumerate(WORST_CASE_OBJECTIVES)]
            return attacks.select_routed(self, self.training_policy, candidates, labels)
        policy = self.training_policy if self.defense in POLICY_DEFENSES else None
        return attacks.generate(self, images, labels, self.attack, self.defense, policy, seed=self._step_seed())

    def abstention_loss(self, labels, adversarial_logits, sample_weight=None):
        """The abstention term of this step over the side exits (see :func:`abstention_loss`)."""
        return tf.add_n([weight * abstention_loss(labels, logits, sample_weight)
                         for weight, logits in zip(self.exit_weights[:-1], adversarial_logits[:-1])])

    def distillation_loss(self, labels, clean_logits, adversarial_logits, sample_weight=None):
        """The distillation terms of this step (see :class:`rdinet_tf.training.distillation.NeoKD`)."""
        return self.distillation.loss(labels, clean_logits, adversarial_logits, self.exit_weights,
                                      tf.stack([self._step_seed(), 1]), sample_weight)

    def _step_seed(self):
        """The training step's seed: ``seed`` plus the optimizer's iterations."""
        return self.attack_seed + tf.cast(self.optimizer.iterations, tf.int32)

    if _REPLACES_KERAS_BUILD_HOOK:
        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            """Build the optimizer, the one thing left unbuilt before ``fit`` (the network is built when made,
            and L_RDI needs no compiled loss or metrics).

            Replaces Keras's private hook (see :func:`_keras_build_hook_parameters`), which under a
            ``tf.distribute`` strategy draws a batch of the training stream to build from (so the
            training then starts at the next batch) and under ``MultiWorkerMirroredStrategy`` fails
            to reduce it. Defined only where Keras has the hook with these parameters.
            """
            del iterator, data_batch
            if self.optimizer is not None and not self.optimizer.built:
                with self.distribute_strategy.scope():
                    self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        adversarial = self.adversarial_batch(images, labels)
        slowdown = self.slowdown_batch(images, labels)
        slowdown_term = distillation_term = abstention_term = None
        with tf.GradientTape() as tape:
            clean_logits = self(images, training=True)
            adversarial_logits = None if adversarial is None else self(adversarial, training=True)
            loss = self.rdi_loss(labels, clean_logits, adversarial_logits, sample_weight)
            if self.distillation is not None:
                distillation_term = self.distillation_loss(labels, clean_logits, adversarial_logits, sample_weight)
                loss += distillation_term
            if self.abstention_weight > 0:
                abstention_term = self.abstention_loss(labels, adversarial_logits, sample_weight)
                loss += self.abstention_weight * abstention_term
            if slowdown is not None:
                slowdown_term = self.slowdown_loss(
                    labels, clean_logits, self.exit_logits(slowdown, range(self.num_exits - 1), training=True),
                    sample_weight)
                loss += self.slowdown_weight * slowdown_term
            regularization = tf.add_n(self.losses) if self.losses else 0.0
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss((loss + regularization) / replicas)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self._rdi_metrics.update(loss, labels, sample_weight, clean_logits, adversarial_logits,
                                 {"slowdown": slowdown_term, "distillation": distillation_term,
                                  "abstention": abstention_term})
        return _logs(self.metrics)

    def test_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        clean_logits = self(images, training=False)
        loss = self.rdi_loss(labels, clean_logits, None, sample_weight)
        self._rdi_metrics.update(loss, labels, sample_weight, clean_logits)
        return _logs(self._rdi_metrics.evaluated)


class FollowThresholds(keras.callbacks.Callback):
    """Before each epoch, calibrates the thresholds a policy-aware defense attacks on held-out ``images``.

    The thresholds follow the model as it learns (``ExitPolicy.calibrate(model, images, **calibration)``,
    default ``equal_share``) and come from data that is never the test set; they are logged as
    ``threshold_k`` and saved with the model (its compile config). A resumed run recalibrates from the
    restored weights, as the uninterrupted run did.
    """

    def __init__(self, images, **calibration):
        super().__init__()
        self.images, self.calibration = images, calibration

    def on_epoch_begin(self, epoch, logs=None):
        policy = ExitPolicy.calibrate(self.model, self.images, **self.calibration)
        self.model.training_policy.assign(policy.thresholds)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update({f"threshold_{k + 1}": float(t) for k, t in enumerate(self.model.training_policy.values())})


def _logs(metrics):
    """A step's logs: each metric's result, as Keras can reduce it over the replicas.

    Across workers, Keras 3.15 averages the replicas' logs along axis 0 (``strategy.reduce("MEAN", axis=0)``),
    which a scalar lacks: there each result is returned with a leading axis of size 1 (reduced to a scalar).
    """
    logs = {m.name: m.result() for m in metrics}
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.cluster_resolver.cluster_spec():
        logs = {name: value[None] for name, value in logs.items()}
    return logs


class _RDIMetrics:
    """The metrics of RDI training: loss, per-exit clean and adversarial accuracy, user metrics per exit,
    the slowdown, distillation and abstention terms when trained with them."""

    def __init__(self, num_exits, adversarial, slowdown, distillation, abstention, metric_specs):
        exits = [f"exit_{k + 1}" for k in range(num_exits)]
        self.loss = keras.metrics.Mean(name="loss")
        self.clean = [keras.metrics.SparseCategoricalAccuracy(name=f"{e}_acc") for e in exits]
        self.adversarial = ([keras.metrics.SparseCategoricalAccuracy(name=f"{e}_adv_acc") for e in exits]
                            if adversarial else [])
        self.terms = {name: keras.metrics.Mean(name=f"{name}_loss")
                      for name, used in (("slowdown", slowdown), ("distillation", distillation),
                                         ("abstention", abstention)) if used}
        self.user = [[_exit_metric(spec, e) for spec in metric_specs] for e in exits]
        self.evaluated = [self.loss, *self.clean, *(m for per_exit in self.user for m in per_exit)]
        self.all = [*self.evaluated, *self.adversarial, *self.terms.values()]

    def update(self, loss, labels, sample_weight, clean_logits, adversarial_logits=None, terms=None):
        batch = tf.shape(labels)[0]
        self.loss.update_state(loss, sample_weight=batch)
        for k, logits in enumerate(clean_logits):
            self.clean[k].update_state(labels, logits, sample_weight=sample_weight)
            for metric in self.user[k]:
                metric.update_state(labels, logits, sample_weight=sample_weight)
        for metric, logits in zip(self.adversarial, adversarial_logits or []):
            metric.update_state(labels, logits, sample_weight=sample_weight)
        for name, term in (terms or {}).items():
            if term is not None:
                self.terms[name].update_state(term, sample_weight=batch)


def _exit_metric(spec, exit_label):
    """A fresh metric of ``spec`` (name, class or object) for one exit, named ``<exit>_<name>``."""
    metric = keras.metrics.get(spec) if isinstance(spec, str) else spec
    if isinstance(metric, type):
        metric = metric()
    if not isinstance(metric, keras.metrics.Metric):
        raise InputError(f"metrics must be Keras metric names, classes or objects (e.g. "
                         f"'sparse_top_k_categorical_accuracy'); got {spec!r}")
    config = metric.get_config()
    config["name"] = f"{exit_label}_{config.get('name') or metric.name}"
    return type(metric).from_config(config)
