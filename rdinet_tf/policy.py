"""Entropy early exit: each input leaves at the first exit whose entropy is below its threshold.

Entropy is the reference's H(p) = -sum p log(p + 1e-5) of the exit's softmax.
The last exit always answers, so a K-exit model has K-1 thresholds.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from rdinet_tf import flops
from rdinet_tf.accounting import exit_shares
from rdinet_tf.errors import InputError
from rdinet_tf.inputs import check_thresholds

ENTROPY_EPS = 1e-5
# Smallest calibrated threshold: 0 means "exit disabled", so calibration never returns it.
MIN_THRESHOLD = 1e-12


def entropy(logits):
    """Per-sample softmax entropy of ``logits`` (N, C) -> (N,), as in the reference.

    Keras ops: runs on tensors inside ``tf.function``, on numpy arrays, and in
    the exported TFLite segments.
    """
    probs = ops.softmax(logits, axis=-1)
    return -ops.sum(probs * ops.log(probs + ENTROPY_EPS), axis=-1)


def exit_entropies(exit_logits):
    """Entropies of every exit: list of K (N, C) logits -> (N, K)."""
    return ops.stack([entropy(logits) for logits in exit_logits], axis=1)


def first_confident_exit(entropies, thresholds):
    """0-based exit each sample takes: the first k < K-1 with entropy < T_k, else K-1.

    A threshold of 0 disables its exit (never taken, even for entropies a hair below 0).
    """
    entropies = ops.convert_to_tensor(entropies)
    num_exits = entropies.shape[1]
    thresholds = ops.cast(ops.convert_to_tensor(np.asarray(thresholds)), entropies.dtype)
    confident = ops.logical_and(entropies[:, :-1] < thresholds, thresholds > 0)
    side_exits = ops.arange(num_exits - 1, dtype="int32")
    taken = ops.where(confident, side_exits, num_exits - 1)
    return ops.min(ops.concatenate([taken, ops.full_like(taken[:, :1], num_exits - 1)], axis=1), axis=1)


def routed_logits(exit_logits, exits):
    """The logits of the exit each sample takes: list of K (N, C) and exits (N,) -> (N, C)."""
    stacked = ops.stack(exit_logits, axis=1)
    return ops.take_along_axis(stacked, ops.reshape(ops.cast(exits, "int32"), (-1, 1, 1)), axis=1)[:, 0]


@dataclasses.dataclass(frozen=True)
class PolicyResult:
    """Adaptive inference on a set of inputs; all arrays have one entry per sample."""

    predictions: np.ndarray  # predicted class
    exits: np.ndarray  # 0-based exit taken
    costs: np.ndarray  # cost of the exit taken, in MFLOPs of ``convention``
    convention: str
    num_exits: int

    @property
    def exit_shares(self):
        """Fraction of samples leaving at each exit, shape (K,)."""
        return exit_shares(self.exits, self.num_exits)

    @property
    def mean_cost(self):
        return float(self.costs.mean())

    def accuracy(self, labels):
        return float(np.mean(self.predictions == np.asarray(labels).reshape(-1)))


@keras.saving.register_keras_serializable(package="rdinet_tf")
class ExitPolicy:
    """One entropy threshold per side exit, with calibration and adaptive prediction.

    Build one with :meth:`calibrate` (on held-out data, never the test set) or
    from known thresholds, then attach it with ``model.exit_policy = policy`` so
    it is saved in the model's ``.keras`` file.
    """

    def __init__(self, thresholds):
        self.thresholds = check_thresholds(thresholds)

    @property
    def num_exits(self):
        return len(self.thresholds) + 1

    def get_config(self):
        return {"thresholds": [float(t) for t in self.thresholds]}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"ExitPolicy(thresholds={np.round(self.thresholds, 4).tolist()})"

    def exits(self, exit_logits):
        """0-based exit each sample takes (N,), from the list of all K exits' logits."""
        self._check_num_exits(len(exit_logits))
        return first_confident_exit(exit_entropies(exit_logits), self.thresholds)

    def route(self, exit_logits):
        """Routed logits (N, C) and 0-based exit taken (N,); differentiable, usable in ``tf.function``."""
        exits = self.exits(exit_logits)
        return routed_logits(exit_logits, exits), exits

    def predict(self, model, images, batch_size=256, convention="honest"):
        """Adaptive inference of ``model`` on ``images`` (array or dataset) -> :class:`PolicyResult`."""
        self._check_num_exits(model.num_exits)
        costs = flops.exit_costs(model, convention, thresholds=self.thresholds)
        routed, exits = (np.asarray(t) for t in self.route(predict_exit_logits(model, images, batch_size)))
        return PolicyResult(routed.argmax(-1), exits, costs[exits], convention, model.num_exits)

    def _check_num_exits(self, num_exits):
        if num_exits != self.num_exits:
            raise InputError(
                f"this policy has {len(self.thresholds)} thresholds, for a model with "
                f"{self.num_exits} exits; the model has {num_exits} exits and needs "
                f"{num_exits - 1} thresholds"
            )

    @classmethod
    def calibrate(cls, model, images, method="equal_share", shares=None, target_cost=None,
                  convention="honest", batch_size=256):
        """Thresholds from the exit entropies of ``model`` on held-out ``images``.

        Methods:
            ``"equal_share"``: the reference procedure: walking the exits, T_k is
                the entropy at position floor(N/K) among the samples still
                present, so about N/K samples leave at each side exit.
            ``"shares"``: ``shares`` gives the fraction of the whole set to leave
                at each of the K-1 side exits (sum <= 1).
            ``"target_cost"``: the most accurate-leaning policy whose average
                cost in ``convention`` is at most ``target_cost`` (a fixed fraction
                of the remaining samples leaves at each side exit, found by bisection).
        """
        entropies = np.asarray(exit_entropies(predict_exit_logits(model, images, batch_size)))
        num_samples, num_exits = entropies.shape
        if method == "equal_share":
            thresholds = thresholds_for_counts(entropies, [num_samples // num_exits] * (num_exits - 1))
        elif method == "shares":
            thresholds = thresholds_for_counts(entropies, _counts_from_shares(shares, entropies.shape))
        elif method == "target_cost":
            thresholds = _thresholds_for_cost(
                entropies, lambda t: flops.exit_costs(model, convention, thresholds=t), target_cost)
        else:
            raise InputError(
                f"unknown calibration method {method!r}; choose 'equal_share', 'shares' "
                "(with shares=[...]) or 'target_cost' (with target_cost=MFLOPs)"
            )
        return cls(thresholds)


def predict_exit_logits(model, images, batch_size=256):
    """All exits' logits as a list of K numpy arrays (N, C), batched, without a progress bar."""
    if hasattr(images, "shape"):
        images = model.check_images(images)
    logits = model.predict(images, batch_size=batch_size, verbose=0)
    return [np.asarray(x) for x in logits]


def thresholds_for_counts(entropies, counts):
    """Thresholds so that ``counts[k]`` samples leave at side exit k (ties may add more)."""
    remaining = np.ones(entropies.shape[0], dtype=bool)
    thresholds = np.zeros(entropies.shape[1] - 1)
    for k, count in enumerate(counts):
        present = np.sort(entropies[remaining, k])
        if count >= present.size:
            threshold = np.nextafter(present[-1], np.inf) if present.size else 0.0
        else:
            threshold = present[count]
        # Confident samples have entropy -log(1 + 1e-5) < 0; a calibrated exit stays enabled (> 0).
        thresholds[k] = max(threshold, MIN_THRESHOLD)
        remaining &= ~(entropies[:, k] < thresholds[k])
    return thresholds


def _counts_from_shares(shares, shape):
    num_samples, num_exits = shape
    shares = np.asarray(shares if shares is not None else [], dtype=np.float64)
    if shares.shape != (num_exits - 1,) or (shares < 0).any() or shares.sum() > 1 + 1e-9:
        raise InputError(
            f"shares must be {num_exits - 1} non-negative fractions (one per side exit) "
            f"summing to at most 1; got {shares.tolist()}"
        )
    return np.floor(shares * num_samples + 1e-9).astype(int).tolist()


def _thresholds_for_cost(entropies, exit_costs_for, target_cost, iterations=30):
    """Bisection on the fraction of remaining samples leaving at each side exit.

    ``exit_costs_for(thresholds)`` gives the per-exit costs under those thresholds.
    """
    num_samples, num_exits = entropies.shape
    cheapest = exit_costs_for(None)[0]
    if target_cost is None or not cheapest <= target_cost:
        raise InputError(
            f"target_cost must be at least the cost of the first exit ({cheapest:.3f} MFLOPs); "
            f"got {target_cost!r}"
        )

    def policy_for(fraction):
        counts, left = [], num_samples
        for _ in range(num_exits - 1):
            counts.append(int(fraction * left))
            left -= counts[-1]
        thresholds = thresholds_for_counts(entropies, counts)
        exits = np.asarray(first_confident_exit(entropies, thresholds))
        return thresholds, exit_costs_for(thresholds)[exits].mean()

    low, high = 0.0, 1.0  # fraction leaving at each side exit: cost falls as it grows
    best, cost = policy_for(low)
    if cost <= target_cost:
        return best
    best, _ = policy_for(high)
    for _ in range(iterations):
        middle = (low + high) / 2
        thresholds, cost = policy_for(middle)
        if cost <= target_cost:
            high, best = middle, thresholds
        else:
            low = middle
    return best
