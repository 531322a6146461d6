"""Exit-diversity distillation for RDI training: NEO-KD (Ham et al., NeurIPS 2023).

Adversarial examples made on one exit of a multi-exit network tend to fool the
others too (they share the backbone). NEO-KD adds two distillation terms to the
training loss, each a KL divergence from a teacher built from the exits' softmax
outputs p_j(x) on the *clean* batch (held constant: no gradient flows through a
teacher) to an exit's softmax p_k(x_adv) on the *adversarial* batch:

* neighbour knowledge distillation (NKD): exit k is pulled towards the mean of
  its neighbours' clean outputs, N(k) = {k-1, k, k+1} within 1..K::

      L_NKD = sum_k w_k * mean_batch KL(mean_{j in N(k)} p_j(x) || p_k(x_adv))

* exit-wise orthogonal knowledge distillation (EOKD): the wrong classes are
  dealt out to the exits, each to exactly one (in a random order drawn afresh
  for every sample and step, round robin); exit k's teacher is its own clean
  output restricted to the true class and the wrong classes dealt to it,
  renormalised::

      L_EOKD = sum_k w_k * mean_batch KL(mask_k p_k(x) / |mask_k p_k(x)| || p_k(x_adv))

  so the exits learn to spread their doubt over different wrong classes and an
  adversarial example that pushes one exit towards a wrong class transfers less
  to the others.

:class:`NeoKD` adds ``neighbour_weight * L_NKD + orthogonal_weight * L_EOKD``
to L_RDI, with the exit weights w_k of the RDI loss (the paper averages the exits;
a uniform w_k only rescales both weights). Give it to
``MultiExitModel.compile(..., distillation=NeoKD(...))``; it uses the adversarial
batch of the training defense.
"""

import dataclasses
import math

import keras
import tensorflow as tf

from rdinet_lite.errors import InputError
from rdinet_tf.training.losses import weighted_batch_mean


def kl_from_logits(teacher, logits):
    """Per-sample KL(teacher || softmax(logits)); ``teacher`` rows are probabilities (zeros allowed)."""
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_sum(tf.math.xlogy(teacher, teacher) - teacher * tf.nn.log_softmax(logits), axis=-1)


def deal_wrong_classes(labels, num_classes, num_exits, seed):
    """(N, C) int32: the exit (0-based) each wrong class is dealt to, -1 for the true class.

    Per sample the wrong classes are put in a random order and dealt round robin,
    so each goes to exactly one exit and the exits' shares differ by at most one.
    """
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    true_class = tf.one_hot(labels, num_classes, on_value=True, off_value=False)
    order = tf.random.stateless_uniform(tf.stack([tf.shape(labels)[0], num_classes]), seed)
    order = tf.where(true_class, 2.0, order)  # the true class sorts last, after every wrong class
    rank = tf.argsort(tf.argsort(order, axis=-1), axis=-1)
    return tf.where(true_class, -1, rank % num_exits)


@keras.saving.register_keras_serializable(package="rdinet_tf")
@dataclasses.dataclass(frozen=True)
class NeoKD:
    """NEO-KD's two distillation terms (see the module doc), weighted; a Keras-serialisable setting."""

    neighbour_weight: float = 1.0
    orthogonal_weight: float = 1.0

    def __post_init__(self):
        weights = (self.neighbour_weight, self.orthogonal_weight)
        if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
            raise InputError(f"NeoKD needs non-negative finite weights, not both 0; got neighbour_weight="
                             f"{self.neighbour_weight}, orthogonal_weight={self.orthogonal_weight}")

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def loss(self, labels, clean_logits, adversarial_logits, exit_weights, seed, sample_weight=None):
        """``neighbour_weight * L_NKD + orthogonal_weight * L_EOKD`` of one batch.

        ``seed`` (two integers) draws the dealing of the wrong classes.
        """
        clean_logits = [tf.stop_gradient(tf.cast(z, tf.float32)) for z in clean_logits]
        clean = [tf.nn.softmax(z) for z in clean_logits]
        dealt = deal_wrong_classes(labels, tf.shape(clean[0])[-1], len(clean), seed)
        total = 0.0
        for k, weight in enumerate(exit_weights):
            if weight == 0:
                continue
            neighbours = clean[max(k - 1, 0):k + 2]
            term = self.neighbour_weight * weighted_batch_mean(
                kl_from_logits(tf.add_n(neighbours) / len(neighbours), adversarial_logits[k]), sample_weight)
            # p_k restricted to the kept classes and renormalised: the softmax of the kept logits alone.
            teacher = tf.nn.softmax(tf.where(tf.logical_or(dealt == k, dealt < 0), clean_logits[k], -math.inf))
            term += self.orthogonal_weight * weighted_batch_mean(
                kl_from_logits(teacher, adversarial_logits[k]), sample_weight)
            total += weight * term
        return total
