"""The terms of L_RDI and of the policy-aware defenses."""

import math

import numpy as np
import tensorflow as tf

from rdinet_tf import attacks
from rdinet_lite.errors import InputError
from rdinet_tf.exits.policy import entropy


def weighted_batch_mean(losses, sample_weight=None):
    """``sum(w * loss) / batch size`` of per-sample losses: the reduction of every term of the training loss
    (Keras's ``"sum_over_batch_size"``, without the division by replicas)."""
    if sample_weight is not None:
        losses *= tf.cast(tf.reshape(sample_weight, [-1]), losses.dtype)
    return tf.reduce_sum(losses) / tf.cast(tf.size(losses), losses.dtype)


def weighted_cross_entropy(labels, logits, sample_weight=None):
    """Mean cross-entropy of one exit, ``sum(w * CE) / batch size`` as Keras reduces a weighted loss.

    Unlike a ``keras.losses.Loss`` object, it does not divide by the replicas of a
    ``tf.distribute`` strategy: ``train_step`` does that once, for the whole loss.
    """
    return weighted_batch_mean(attacks.cross_entropy(labels, logits), sample_weight)


def check_exit_weights(exit_weights, num_exits):
    """``exit_weights`` as a list of ``num_exits`` floats (all 1 when None); one clear error otherwise."""
    weights = np.ones(num_exits) if exit_weights is None else np.asarray(exit_weights, float)
    if weights.shape != (num_exits,) or not np.isfinite(weights).all() or (weights < 0).any():
        raise InputError(f"exit_weights must be {num_exits} non-negative numbers (one per exit); got {exit_weights!r}")
    if not weights.sum() > 0:
        raise InputError(f"exit_weights are all 0: no exit would be trained (the loss would be 0); give at least one "
                         f"exit a positive weight, e.g. {','.join(['0'] * (num_exits - 1) + ['1'])}")
    return [float(w) for w in weights]


def rdi_loss(labels, clean_logits, adversarial_logits, exit_weights, adversarial_weight, sample_weight=None):
    """L_RDI of one batch: per-exit clean and adversarial cross-entropies, weighted.

    ``adversarial_logits`` None: clean terms only, at full weight.
    """
    clean_weight = 1.0 - adversarial_weight if adversarial_logits is not None else 1.0
    total = 0.0
    for k, weight in enumerate(exit_weights):
        term = clean_weight * weighted_cross_entropy(labels, clean_logits[k], sample_weight)
        if adversarial_logits is not None:
            term += adversarial_weight * weighted_cross_entropy(labels, adversarial_logits[k], sample_weight)
        total += weight * term
    return total


_SEED_STRIDE = 7919  # apart the random starts of the worst-case defense's candidates


def abstention_loss(labels, logits, sample_weight=None):
    """How confident one exit is where it is wrong: per sample ``(1 - p_y) * (1 - H / log C)``, weighted mean.

    ``p_y`` is the exit's probability of the true class (a constant: the term
    only moves the entropy H), ``1 - H / log C`` its confidence in [0, 1]
    (0: a uniform softmax). Minimising it raises the entropy of the inputs the
    exit gets wrong, above any threshold, so that they go on to deeper exits,
    and leaves the ones it gets right alone.
    """
    logits = tf.cast(logits, tf.float32)
    wrong = 1.0 - tf.stop_gradient(tf.gather(tf.nn.softmax(logits), tf.cast(labels, tf.int32), batch_dims=1))
    confidence = 1.0 - entropy(logits) / math.log(logits.shape[-1])
    return weighted_batch_mean(wrong * confidence, sample_weight)
