"""Magnitude-pruned single-exit baseline: the static alternative to early exit.

:func:`prune_final_exit` takes a trained :class:`MultiExitModel` used through
its final exit only (the defended single-exit baseline, or the backbone path of
an RDI model), prunes it with TensorFlow Model Optimization
(``prune_low_magnitude``, polynomial-decay schedule to a target sparsity),
fine-tunes it adversarially with the pruning step updates, strips the wrappers
and returns a Keras 3 :class:`MultiExitModel` of the same architecture holding
the sparse weights, with all thresholds 0 (side exits disabled: every input
answers at the final exit), so evaluation, robustness reports and TFLite
export take it unchanged.

Pruned layers: every ``Conv2D``, ``DepthwiseConv2D`` and ``Dense`` kernel on the
final-exit path (all stages and the final head), each to the same sparsity;
biases, BatchNorm and the side-exit heads stay as they are.

TF-MOT only prunes tf_keras (Keras 2) models, and importing it sets
``TF_USE_LEGACY_KERAS=1``. It is imported here only, lazily, after ``tf.keras``
has been resolved to Keras 3, and ``os.environ`` is restored right after; the
tf_keras twin of the final-exit path lives only inside :func:`prune_final_exit`.
"""

import contextlib
import dataclasses
import inspect
import os
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from rdinet_tf import data
from rdinet_tf.architecture import flops
from rdinet_lite.accounting import to_mflops
from rdinet_tf import attacks
from rdinet_tf.architecture import MultiExitNetwork
from rdinet_tf.architecture.graph import flat_layers, output_positions, replay
from rdinet_lite.errors import InputError
from rdinet_tf.evaluation import robustness_report
from rdinet_tf.exits.policy import ExitPolicy, predict_exit_logits
from rdinet_tf.training import MultiExitModel, rdi_loss

PRUNABLE_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
# Fraction of the fine-tune steps over which the sparsity ramps up; the rest recovers.
RAMP_FRACTION = 0.6
# Mask updates during the ramp.
RAMP_UPDATES = 10
# The twin must reproduce the Keras 3 final-exit logits to this relative tolerance.
TWIN_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class PruningResult:
    """The pruned model and what was done to it."""

    model: MultiExitModel  # Keras 3, sparse final-exit path, thresholds 0
    target_sparsity: float
    sparsity: float  # measured: zero kernel weights / kernel weights over the pruned layers
    layer_sparsity: dict  # pruned layer name -> measured sparsity
    schedule: dict  # the polynomial-decay schedule's parameters
    steps: int
    seconds: float
    loss: list  # mean fine-tune loss per epoch


def check_model(model):
    """Raise :class:`InputError` unless ``model`` is a rdinet_tf multi-exit model."""
    if not isinstance(model, MultiExitNetwork):
        raise InputError(f"pruning needs a MultiExitModel (rdinet_tf.models.build(...) or a model.keras "
                         f"written by rdinet_tf.train); got {type(model).__name__}")


def final_exit_path(model):
    """The sub-models an input passes through to the final exit: every stage, then the last head."""
    return [*model.stages, model.heads[-1]]


def prunable_layers(model):
    """Names of the layers that get pruned: conv and dense layers of the final-exit path."""
    check_model(model)
    return [layer.name for layer in _path_layers(model) if isinstance(layer, PRUNABLE_TYPES)]


def _path_layers(model):
    """Every layer of the final-exit path, in order."""
    return [layer for segment in final_exit_path(model) for layer in flat_layers(segment)]


def final_exit_cost(model, convention="honest", sparse=False):
    """MFLOPs of one input through the final-exit path (stages + final head, no side heads).

    What a single-exit deployment runs. ``sparse``: non-zero weights only.
    """
    return float(flops.exit_costs(model, convention, sparse, single_exit_policy(model).thresholds)[-1])


def _pruned_layer_shapes(model):
    """``[(layer, kernel weights, output positions)]`` for each layer of :func:`prunable_layers`."""
    return [(layer, flops.kernel_weights(layer), output_positions(layer))
            for layer in _path_layers(model) if isinstance(layer, PRUNABLE_TYPES)]


def sparsity_for_cost(model, target_mflops, convention="honest"):
    """The sparsity of the pruned layers that brings the final-exit cost to ``target_mflops``.

    Every pruned layer gets the same sparsity s, so
    cost(s) = unprunable + (1 - s) * prunable and s = (dense cost - target) / prunable,
    in ``convention`` (dense layers count only in "honest"). Pruning keeps at
    least one weight per layer, which bounds how low the cost can go.
    """
    counted = [(layer, weights, positions) for layer, weights, positions in _pruned_layer_shapes(model)
               if convention == "honest" or not isinstance(layer, keras.layers.Dense)]
    dense = final_exit_cost(model, convention)
    prunable = float(to_mflops(sum(weights * positions for _, weights, positions in counted), convention))
    floor = dense - prunable + float(to_mflops(sum(positions for _, _, positions in counted), convention))
    if not target_mflops > floor:
        raise InputError(
            f"target {target_mflops:g} MFLOPs ({convention}) is below what pruning can reach: the "
            f"final-exit path costs {floor:.4f} MFLOPs with one weight left per pruned layer; "
            "pick a larger target")
    if target_mflops > dense:
        raise InputError(
            f"target {target_mflops:g} MFLOPs ({convention}) is above the unpruned final-exit cost "
            f"{dense:.3f} MFLOPs: nothing to prune; pick a smaller target (or --target-sparsity 0)")
    return (dense - target_mflops) / prunable


def check_sparsity(sparsity):
    if not 0 <= sparsity < 1:
        raise InputError(f"sparsity must be in [0, 1) (fraction of weights set to zero); got {sparsity}")
    return float(sparsity)


def measured_sparsity(model):
    """``(overall, {layer name: sparsity})`` over the kernels of :func:`prunable_layers`."""
    zeros = {layer.name: int(np.sum(keras.ops.convert_to_numpy(layer.kernel) == 0))
             for layer, _, _ in _pruned_layer_shapes(model)}
    sizes = {layer.name: weights for layer, weights, _ in _pruned_layer_shapes(model)}
    return sum(zeros.values()) / sum(sizes.values()), {name: zeros[name] / sizes[name] for name in zeros}


def single_exit_policy(model):
    """Thresholds all 0: every input answers at the final exit."""
    return ExitPolicy([0.0] * (model.num_exits - 1))


def evaluate_final_exit(model, splits, attack, samples, sparse, progress=False):
    """The model through its final exit alone: TA (test split), ATA (first ``samples``), sparsity, cost."""
    final_exit = model.num_exits - 1
    report = robustness_report(
        model, splits.x_test[:samples], splits.y_test[:samples], [attack],
        policy=single_exit_policy(model), objectives=[f"exit_{final_exit + 1}"], progress=progress,
        slowdown=False)
    logits = predict_exit_logits(model, splits.x_test)[final_exit]
    return {"accuracy": float(np.mean(logits.argmax(-1) == splits.y_test)),
            "ata": report.exit_adversarial_accuracy[attack.name][final_exit],
            "sparsity": measured_sparsity(model)[0],
            "mflops": final_exit_cost(model, "honest", sparse),
            "paper_mflops": final_exit_cost(model, "paper", sparse)}


@contextlib.contextmanager
def _restored_environment():
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def _legacy_keras():
    """``(tf_keras, tfmot.sparsity.keras)``, imported without changing this process's Keras.

    ``tf.keras`` is resolved first, while the environment still selects Keras 3,
    so TF-MOT's ``TF_USE_LEGACY_KERAS=1`` cannot reroute it; the variable is then undone.
    """
    tf.keras.version()  # resolves the lazy tf.keras loader now, to Keras 3
    with _restored_environment(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TF-MOT's own use of distutils
        import tf_keras
        from tensorflow_model_optimization import sparsity
    return tf_keras, sparsity.keras


def _twin_layer(layer, tf_keras):
    """A tf_keras layer with the configuration of the built-in Keras 3 ``layer`` (weights not copied)."""
    twin_class = getattr(tf_keras.layers, type(layer).__name__, None)
    if twin_class is None or not type(layer).__module__.startswith("keras."):
        raise InputError(f"cannot prune through layer {layer.name!r} of type {type(layer).__name__}: "
                         "only built-in Keras layers have a tf_keras twin")
    accepted = set(inspect.signature(twin_class.__init__).parameters) | {"name", "trainable"}
    config = {key: value for key, value in layer.get_config().items()
              if key in accepted and key != "dtype"
              and not key.endswith(("_initializer", "_regularizer", "_constraint"))}
    return twin_class(**config)


def _pruned_twin(model, schedule, tf_keras, tfmot_keras):
    """tf_keras model image -> final-exit logits, prunable layers wrapped, weights copied in.

    Returns the twin and ``[(keras3_layer, twin_layer)]`` (twin_layer unwrapped).
    """
    prunable = set(prunable_layers(model))
    pairs = []

    def make_layer(layer):
        twin = _twin_layer(layer, tf_keras)
        pairs.append((layer, twin))
        if layer.name in prunable:
            return tfmot_keras.prune_low_magnitude(twin, pruning_schedule=schedule)
        return twin

    image = tf_keras.Input(shape=model.image_shape, name="image")
    features = image
    for segment in final_exit_path(model):
        features = replay(segment, features, make_layer)
    try:
        twin = tf_keras.Model(image, features, name=f"{model.name}_final_exit")
    except ValueError as error:
        raise InputError(f"cannot build the tf_keras twin of {model.name!r}: {error}") from error
    for layer, twin_layer in pairs:
        twin_layer.set_weights(layer.get_weights())
    return twin, pairs


def _check_twin(model, twin, images):
    expected = np.asarray(model.exit_logits(images, [model.num_exits - 1])[0])
    difference = float(np.max(np.abs(expected - twin(images, training=False).numpy())))
    if difference > TWIN_TOLERANCE * max(1.0, float(np.max(np.abs(expected)))):
        raise InputError(f"the tf_keras twin of {model.name!r} differs from it by {difference:.2g} "
                         "on the final exit; a layer's configuration did not carry over")


def polynomial_schedule(sparsity, total_steps):
    """Polynomial-decay parameters: 0 -> ``sparsity`` over the first ``RAMP_FRACTION`` of the steps."""
    ramp = max(1, int(RAMP_FRACTION * total_steps))
    frequency = max(1, ramp // RAMP_UPDATES)
    return {"initial_sparsity": 0.0, "final_sparsity": sparsity, "begin_step": 0,
            "end_step": frequency * (ramp // frequency), "power": 3, "frequency": frequency}


@dataclasses.dataclass(frozen=True)
class FineTune:
    """The adversarial fine-tune that pruning runs alongside (see :func:`prune_final_exit`).

    Each step minimises ``(1 - adversarial_weight) * CE(clean) + adversarial_weight * CE(x_adv)`` on the
    final exit, with SGD (momentum 0.9) at ``learning_rate``; ``steps_per_epoch`` None is one pass over the
    training images; ``seed`` seeds the batches' order and the attack's random starts.
    """

    epochs: int = 1
    steps_per_epoch: int = None
    batch_size: int = 128
    learning_rate: float = 0.01
    adversarial_weight: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.batch_size < 1:
            raise InputError(f"fine-tuning needs batch_size >= 1; got {self.batch_size}")

    def steps(self, num_images):
        """Steps per epoch over ``num_images`` training images (checked with the epochs)."""
        steps = self.steps_per_epoch or int(np.ceil(num_images / self.batch_size))
        if self.epochs < 1 or steps < 1:
            raise InputError(f"fine-tuning needs epochs >= 1 and steps_per_epoch >= 1; got {self.epochs}, {steps}")
        return steps


def prune_final_exit(model, images, labels, sparsity, attack, **fine_tune):
    """Prune ``model``'s final-exit path to ``sparsity`` while fine-tuning adversarially.

    Each fine-tune step attacks the final exit's cross-entropy (``x_adv = attack.perturb``, the attack
    code of :mod:`rdinet_tf.attacks`) and minimises the :class:`FineTune` loss. Clean and adversarial
    images go through one forward pass, so each step advances the pruning schedule once (BatchNorm
    sees both halves together).

    Args:
        model: a trained :class:`MultiExitModel`; it is not changed.
        images, labels: training data (float images in [0, 1], integer labels).
        sparsity: target fraction of zero weights in each pruned layer, in [0, 1).
        attack: an attack method with ``perturb`` (e.g. ``PGD(0.3, 0.01, 40)``, ``fast_fgsm(0.3)``).
        **fine_tune: the :class:`FineTune` settings (``epochs``, ``steps_per_epoch``, ``batch_size``,
            ``learning_rate``, ``adversarial_weight``, ``seed``).

    Returns:
        A :class:`PruningResult`; ``result.model`` is a new Keras 3 model.
    """
    check_model(model)
    sparsity = check_sparsity(sparsity)
    unknown = sorted(set(fine_tune) - {field.name for field in dataclasses.fields(FineTune)})
    if unknown:
        raise InputError(f"prune_final_exit does not take {', '.join(unknown)}; the fine-tune settings are "
                         f"{', '.join(field.name for field in dataclasses.fields(FineTune))}")
    settings = FineTune(**fine_tune)
    images = model.check_images(images)
    steps_per_epoch = settings.steps(len(images))
    tf_keras, tfmot_keras = _legacy_keras()
    schedule = polynomial_schedule(sparsity, settings.epochs * steps_per_epoch)
    twin, pairs = _pruned_twin(model, tfmot_keras.PolynomialDecay(**schedule), tf_keras, tfmot_keras)
    _check_twin(model, twin, images[:8])

    started = time.time()
    optimizer = tf_keras.optimizers.SGD(settings.learning_rate, momentum=0.9)
    losses = _fine_tune(twin, tfmot_keras, optimizer, images, labels, attack, settings)
    stripped = tfmot_keras.strip_pruning(twin)

    pruned = MultiExitModel.from_network(type(model).from_config(model.get_config()))
    pruned.set_weights(model.get_weights())
    pruned.exit_policy = single_exit_policy(model)
    layers_by_name = {layer.name: layer for layer in _path_layers(pruned)}
    for layer, _ in pairs:
        layers_by_name[layer.name].set_weights(stripped.get_layer(layer.name).get_weights())
    overall, per_layer = measured_sparsity(pruned)
    return PruningResult(pruned, sparsity, overall, per_layer, schedule, settings.epochs * steps_per_epoch,
                         time.time() - started, losses)


def _fine_tune(twin, tfmot_keras, optimizer, images, labels, attack, settings):
    """Adversarial fine-tune (:class:`FineTune` ``settings``) of the wrapped ``twin`` with the pruning step
    updates; loss per epoch."""
    seed, steps_per_epoch = settings.seed, settings.steps(len(images))

    def final_exit_loss(x, y):
        return attacks.cross_entropy(y, twin(x, training=False))

    @tf.function(reduce_retracing=True)
    def train_step(x, y, step):
        adversarial = attack.perturb(final_exit_loss, x, y, tf.stack([seed, step]))
        with tf.GradientTape() as tape:
            clean_logits, adversarial_logits = tf.split(twin(tf.concat([x, adversarial], 0), training=True), 2)
            loss = rdi_loss(y, [clean_logits], [adversarial_logits], [1.0], settings.adversarial_weight)
        gradients = tape.gradient(loss, twin.trainable_variables)
        optimizer.apply_gradients(zip(gradients, twin.trainable_variables))
        return loss

    batches = iter(data.make_dataset(images, labels, settings.batch_size, shuffle=True, seed=seed).repeat())
    pruning_steps = tfmot_keras.UpdatePruningStep()
    pruning_steps.set_model(twin)
    pruning_steps.on_train_begin()
    losses = []
    for epoch in range(settings.epochs):
        epoch_loss = [float(train_step(*next(batches), tf.constant(epoch * steps_per_epoch + i)))
                      for i in range(steps_per_epoch)]
        pruning_steps.on_epoch_end(epoch)  # re-applies the masks after the last update
        losses.append(float(np.mean(epoch_loss)))
    return losses
