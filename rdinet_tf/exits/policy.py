"""Entropy early exit: each input leaves at the first exit whose entropy is below its threshold.

Entropy is the reference's H(p) = -sum p log(p + 1e-5) of the exit's softmax.
The last exit always answers, so a K-exit model has K-1 thresholds.

Two ways to run a policy: :meth:`ExitPolicy.predict` computes every exit for
every input and picks one (the cost is accounted, not saved);
:meth:`ExitPolicy.predict_adaptive` runs stage k only on the inputs still
present after exit k-1 (:func:`early_exit_function`), so the saving is real.
"""

import dataclasses
import inspect
import itertools

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from rdinet_tf.architecture import flops
from rdinet_lite.accounting import exit_shares
from rdinet_lite.errors import InputError
from rdinet_lite.inputs import check_batch_size, check_thresholds, entropy_bounds, open_side_exits

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


def confident(entropies, thresholds):
    """Whether each entropy is below its exit's bound, i.e. the input may leave there: strictly below the
    threshold, never at a closed exit (threshold 0, :func:`rdinet_lite.inputs.entropy_bounds`).

    ``entropies`` (..., E) against ``thresholds`` (E,), or one exit's (N,) against a scalar.
    """
    return below_bounds(entropies, entropy_bounds(thresholds))


def below_bounds(entropies, bounds):
    """:func:`confident` from the side exits' entropy bounds (:func:`rdinet_lite.inputs.entropy_bounds`), which
    may be a tensor (the thresholds a training step reads from a variable)."""
    entropies = ops.convert_to_tensor(entropies)
    return entropies < ops.cast(bounds, entropies.dtype)


def first_confident_exit(entropies, thresholds):
    """0-based exit each sample takes: the first k < K-1 with entropy < T_k, else K-1.

    ``entropies`` (N, K), ``thresholds`` (K-1,) -> exits (N,). Thresholds with
    leading axes, e.g. (M, 1, K-1), route under M policies at once -> (M, N).
    A threshold of 0 closes its exit (:func:`rdinet_lite.inputs.entropy_bounds`).
    """
    return first_exit_below(entropies, entropy_bounds(thresholds))


def first_exit_below(entropies, bounds):
    """:func:`first_confident_exit` from the side exits' entropy bounds (see :func:`below_bounds`)."""
    entropies = ops.convert_to_tensor(entropies)
    num_exits = entropies.shape[-1]
    side_exits = ops.arange(num_exits - 1, dtype="int32")
    taken = ops.where(below_bounds(entropies[:, :-1], bounds), side_exits, num_exits - 1)
    return ops.min(ops.concatenate([taken, ops.full_like(taken[..., :1], num_exits - 1)], axis=-1), axis=-1)


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

    Build one from held-out data, never the test set, with one calibration
    (:meth:`equal_share`, :meth:`for_shares`, :meth:`for_cost`, :meth:`robust`;
    or :meth:`calibrate` naming one), or from known thresholds; then attach it
    with ``model.exit_policy = policy`` so it is saved in the model's ``.keras`` file.
    """

    def __init__(self, thresholds):
        self.thresholds = check_thresholds(thresholds)

    @property
    def num_exits(self):
        return len(self.thresholds) + 1

    @property
    def has_open_side_exit(self):
        """Whether some input can leave before the last exit (a threshold of 0 closes its exit)."""
        return bool(np.any(open_side_exits(self.thresholds)))

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
        exit_logits = predict_exit_logits(model, images, batch_size)
        if len(exit_logits[0]) == 0:  # no images: nothing to route (Keras's min refuses empty tensors)
            nothing = np.zeros(0, np.int64)
            return PolicyResult(nothing, nothing, costs[nothing], convention, model.num_exits)
        routed, exits = (np.asarray(t) for t in self.route(exit_logits))
        return PolicyResult(routed.argmax(-1), exits, costs[exits], convention, model.num_exits)

    def predict_adaptive(self, model, images, batch_size=256, convention="honest"):
        """Adaptive inference that saves the compute it reports -> :class:`PolicyResult`.

        The same exits and predictions as :meth:`predict` (up to float rounding of
        an entropy within ~1e-6 of a threshold: the stages run with BatchNorm
        folded), but each batch of ``batch_size`` images runs stage k only on the
        images still present after exit k-1 (:func:`early_exit_function`).
        ``images``: an array (N, H, W, C) of float pixels in [0, 1].
        """
        self._check_num_exits(model.num_exits)
        batch_size = check_batch_size(batch_size)
        costs = flops.exit_costs(model, convention, thresholds=self.thresholds)
        images = model.check_images(images)
        run = early_exit_function(model, self.thresholds)
        logits, exits = [np.zeros((0, model.num_classes), np.float32)], [np.zeros(0, np.int32)]
        for start in range(0, len(images), batch_size):
            batch_logits, batch_exits = run(tf.constant(images[start:start + batch_size]))
            logits.append(batch_logits.numpy())
            exits.append(batch_exits.numpy())
        logits, exits = np.concatenate(logits), np.concatenate(exits).astype(np.int64)
        return PolicyResult(logits.argmax(-1), exits, costs[exits], convention, model.num_exits)

    def _check_num_exits(self, num_exits):
        if num_exits != self.num_exits:
            raise InputError(
                f"this policy has {len(self.thresholds)} thresholds, for a model with "
                f"{self.num_exits} exits; the model has {num_exits} exits and needs "
                f"{num_exits - 1} thresholds"
            )

    @classmethod
    def calibrate(cls, model, images, method="equal_share", batch_size=256, **options):
        """Thresholds from the exit entropies of ``model`` on held-out ``images``, by name: ``method`` is one of
        ``CALIBRATION_METHODS`` and ``options`` are that calibration's own arguments, e.g.
        ``calibrate(model, x_val, "target_cost", target_cost=5.0)`` is ``for_cost(model, x_val, 5.0)``.

        ``"equal_share"``: :meth:`equal_share`; ``"shares"``: :meth:`for_shares` (``shares=``);
        ``"target_cost"``: :meth:`for_cost` (``target_cost=``, ``convention=``); ``"robust"``: :meth:`robust`
        (``labels=``, ``adversarial=``, ``target_cost=``, ``adversarial_cost=``, ``convention=``).
        """
        if method not in CALIBRATION_METHODS:
            raise InputError(
                f"unknown calibration method {method!r}; choose 'equal_share', 'shares' "
                "(with shares=[...]), 'target_cost' (with target_cost=MFLOPs) or 'robust' (with "
                "target_cost=MFLOPs, labels=y and adversarial=[x_adv, ...])"
            )
        calibration = getattr(cls, CALIBRATION_METHODS[method])
        parameters = inspect.signature(calibration).parameters
        accepted = [name for name in parameters if name not in ("model", "images", "batch_size")]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InputError(f"the {method!r} calibration does not take {', '.join(unknown)}; it takes "
                             f"{', '.join(accepted) or 'no options'}")
        # An option left out reaches the calibration as None, which names what it needs.
        required = {name: None for name in accepted if parameters[name].default is parameters[name].empty}
        return calibration(model, images, batch_size=batch_size, **{**required, **options})

    @classmethod
    def equal_share(cls, model, images, batch_size=256):
        """The reference procedure: walking the exits, T_k is the entropy at position floor(N/K) among the
        samples still present, so about N/K of the held-out ``images`` leave at each side exit."""
        entropies = _calibration_entropies(model, images, batch_size)[1]
        num_samples, num_exits = entropies.shape
        return cls(thresholds_for_counts(entropies, [num_samples // num_exits] * (num_exits - 1)))

    @classmethod
    def for_shares(cls, model, images, shares, batch_size=256):
        """``shares``: the fraction of the held-out ``images`` to leave at each of the K-1 side exits (sum <= 1)."""
        entropies = _calibration_entropies(model, images, batch_size)[1]
        return cls(thresholds_for_counts(entropies, _counts_from_shares(shares, entropies.shape)))

    @classmethod
    def for_cost(cls, model, images, target_cost, convention="honest", batch_size=256):
        """The most accurate-leaning policy whose average cost on the held-out ``images``, in MFLOPs of
        ``convention``, is at most ``target_cost`` (a fixed fraction of the remaining samples leaves at each
        side exit, found by bisection)."""
        entropies = _calibration_entropies(model, images, batch_size)[1]
        return cls(_thresholds_for_cost(entropies, _exit_costs_for(model, convention), target_cost))

    @classmethod
    def robust(cls, model, images, labels, adversarial, target_cost, adversarial_cost=None, convention="honest",
               batch_size=256):
        """The thresholds that maximise the worst-case adversarial accuracy over the image sets in
        ``adversarial``, within a cost budget.

        ``adversarial``: a list of arrays shaped like the held-out ``images``, made from them by attacks
        (true ``labels``); ties are broken by clean accuracy, subject to an average cost (MFLOPs of
        ``convention``) of at most ``target_cost`` on the clean ``images`` and, if given, of at most
        ``adversarial_cost`` on every adversarial set. A local search over each exit's clean-entropy
        quantiles, from the :meth:`for_cost` policy and from policies letting a fixed fraction out at each
        exit (:func:`robust_thresholds`). Use attacks that do not depend on the thresholds (single exits,
        average, max-average); :func:`rdinet_tf.evaluation.report.calibrate_robust` makes them.
        """
        exit_logits, entropies = _calibration_entropies(model, images, batch_size)
        labels = _check_robust_inputs(labels, adversarial, len(entropies))
        exit_costs_for = _exit_costs_for(model, convention)
        attacked = [_exit_outcomes(predict_exit_logits(model, x, batch_size), labels) for x in adversarial]
        starts = [_thresholds_for_cost(entropies, exit_costs_for, target_cost)] + [
            thresholds_for_fraction(entropies, fraction) for fraction in np.linspace(0, 1, 6)]
        return cls(robust_thresholds(_exit_outcomes(exit_logits, labels), attacked, exit_costs_for(None),
                                     target_cost, adversarial_cost, starts))


# ``ExitPolicy.calibrate``'s methods: name -> the classmethod computing it.
CALIBRATION_METHODS = {"equal_share": "equal_share", "shares": "for_shares", "target_cost": "for_cost", "robust": "robust"}


def _calibration_entropies(model, images, batch_size):
    """``(exit logits, entropies (N, K))`` of ``model`` on the held-out ``images``; refuses an empty set."""
    exit_logits = predict_exit_logits(model, images, batch_size)
    entropies = np.asarray(exit_entropies(exit_logits))
    if entropies.shape[0] == 0:
        raise InputError("calibration needs held-out images; got none")
    return exit_logits, entropies


def _exit_costs_for(model, convention):
    """``thresholds -> per-exit costs`` of ``model`` in ``convention`` (a closed exit's head is not counted)."""
    return lambda thresholds: flops.exit_costs(model, convention, thresholds=thresholds)


class TrainingThresholds:
    """Side-exit thresholds that a compiled training step reads from a variable, so that they can follow the
    model between epochs (:class:`rdinet_tf.training.FollowThresholds`) without retracing.

    Duck-types an :class:`ExitPolicy` for the attack objectives that know the policy (``route``,
    ``thresholds``); closed exits (threshold 0) stay closed, as everywhere.
    """

    def __init__(self, thresholds):
        thresholds = check_thresholds(thresholds)
        self._thresholds = keras.Variable(thresholds.astype("float32"), trainable=False, name="training_thresholds")
        self._bounds = keras.Variable(entropy_bounds(thresholds).astype("float32"), trainable=False,
                                      name="training_entropy_bounds")

    @property
    def num_exits(self):
        return int(self._thresholds.shape[0]) + 1

    @property
    def thresholds(self):
        """The thresholds as a tensor; closed exits have a bound of -inf (never left at)."""
        return self._bounds.value

    def values(self):
        """The current thresholds, as a numpy array."""
        return np.asarray(self._thresholds.numpy(), np.float64)

    def assign(self, thresholds):
        thresholds = check_thresholds(thresholds)
        if thresholds.shape != tuple(self._thresholds.shape):
            raise InputError(f"expected {self._thresholds.shape[0]} thresholds (one per side exit); got "
                             f"{thresholds.tolist()}")
        self._thresholds.assign(thresholds.astype("float32"))
        self._bounds.assign(entropy_bounds(thresholds).astype("float32"))

    def route(self, exit_logits):
        """Routed logits (N, C) and 0-based exit taken (N,), as :meth:`ExitPolicy.route`."""
        exits = first_exit_below(exit_entropies(exit_logits), self._bounds)
        return routed_logits(exit_logits, exits), exits


def early_exit_function(model, thresholds):
    """``images (N, H, W, C) -> (logits (N, C), exits (N,) int32)``: early exit on a batch, as a ``tf.function``.

    Stage k runs only on the images still present after exit k-1: at each exit
    ``tf.dynamic_partition`` splits them into those leaving (:func:`confident`),
    kept with their positions in the batch, and those gathered into the next
    stage's batch; once none is left the remaining stages are skipped
    (``tf.cond``); one ``tf.dynamic_stitch`` puts the answers back in order. A
    closed exit's head is not computed. Stages and heads run in their folded
    inference form (``model.inference_segments()``). ``exits`` are 0-based;
    ``logits`` are those of the exit each image took. Made once per model and thresholds.
    """
    thresholds = check_thresholds(thresholds)
    cache = model.__dict__.get("_early_exit_functions")
    if cache is None:
        cache = {}
        object.__setattr__(model, "_early_exit_functions", cache)  # not tracked, not saved
    key = tuple(thresholds.tolist())
    if key not in cache:
        cache[key] = tf.function(_early_exit(model, thresholds), input_signature=[
            tf.TensorSpec((None, *model.image_shape), tf.float32, name="images")])
    return cache[key]


def _early_exit(model, thresholds):
    stages, heads = model.inference_segments()
    last = model.num_exits - 1
    is_open = open_side_exits(thresholds)
    answering = [k for k in range(last + 1) if k == last or is_open[k]]  # the exits an image can leave at

    def nobody_from(k):
        """No image leaving at the exits from k on (distinct tensors: a ``tf.cond`` branch returns each once)."""
        return [(tf.zeros([0], tf.int32), tf.zeros([0, model.num_classes], tf.float32)) for j in answering if j >= k]

    def from_stage(k, features, positions):
        """Stage k and later on ``features`` (the images at ``positions`` of the batch) -> for each exit from
        k on that can answer: (positions, logits) of the images leaving there."""
        features = stages[k](features, training=False)
        if k < last and not is_open[k]:
            return from_stage(k + 1, features, positions)
        logits = heads[k](features, training=False)
        if k == last:
            return [(positions, logits)]
        leave = tf.cast(confident(entropy(logits), thresholds[k]), tf.int32)
        staying, leaving = tf.dynamic_partition(tf.range(tf.size(leave)), leave, 2)
        taken = (tf.gather(positions, leaving), tf.gather(logits, leaving))
        features, positions = tf.gather(features, staying), tf.gather(positions, staying)
        return [taken] + tf.cond(tf.size(staying) > 0, lambda: from_stage(k + 1, features, positions),
                                 lambda: nobody_from(k + 1))

    def early_exit(images):
        count = tf.shape(images)[0]
        # No stage runs on an empty batch (TensorFlow's convolutions mis-shape one).
        pieces = tf.cond(count > 0, lambda: from_stage(0, images, tf.range(count)), lambda: nobody_from(0))
        positions = [p for p, _ in pieces]
        logits = tf.dynamic_stitch(positions, [x for _, x in pieces])
        exits = tf.dynamic_stitch(positions, [tf.fill(tf.shape(p), k) for p, k in zip(positions, answering)])
        return logits, exits

    return early_exit


def predict_exit_logits(model, images, batch_size=256):
    """All exits' logits as a list of K numpy arrays (N, C), batched, without a progress bar."""
    if hasattr(images, "shape"):
        images = model.check_images(images)
        if len(images) == 0:  # Keras's predict fails on no batch at all
            return [np.zeros((0, model.num_classes), np.float32) for _ in range(model.num_exits)]
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


def thresholds_for_fraction(entropies, fraction):
    """Thresholds letting ``fraction`` of the samples still present leave at each side exit."""
    counts, left = [], entropies.shape[0]
    for _ in range(entropies.shape[1] - 1):
        counts.append(int(fraction * left))
        left -= counts[-1]
    return thresholds_for_counts(entropies, counts)


def _thresholds_for_cost(entropies, exit_costs_for, target_cost, iterations=30):
    """Bisection on the fraction of remaining samples leaving at each side exit.

    ``exit_costs_for(thresholds)`` gives the per-exit costs under those thresholds.
    """
    cheapest = exit_costs_for(None)[0]
    if target_cost is None or not cheapest <= target_cost:
        raise InputError(
            f"target_cost must be at least the cost of the first exit ({cheapest:.3f} MFLOPs); "
            f"got {target_cost!r}"
        )

    def policy_for(fraction):
        thresholds = thresholds_for_fraction(entropies, fraction)
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


@dataclasses.dataclass(frozen=True)
class ExitOutcomes:
    """Every exit's entropy and correctness on one image set, (N, K) each."""

    entropies: np.ndarray
    correct: np.ndarray


def _exit_outcomes(exit_logits, labels):
    return ExitOutcomes(np.asarray(exit_entropies(exit_logits)),
                        np.stack([logits.argmax(-1) == labels for logits in exit_logits], axis=1))


def _check_robust_inputs(labels, adversarial, num_samples):
    """``labels`` as an (N,) array, checked with ``adversarial`` for the ``"robust"`` calibration."""
    if labels is None or not adversarial:
        raise InputError("the 'robust' calibration needs labels=y and adversarial=[x_adv, ...] (attacked copies "
                         "of the calibration images): rdinet_tf.evaluation.report.calibrate_robust makes them")
    labels = np.asarray(labels).reshape(-1)
    lengths = {len(x) for x in adversarial} | {len(labels)}
    if lengths != {num_samples}:
        raise InputError(f"labels and every adversarial set must have one entry per calibration image "
                         f"({num_samples}); got lengths {sorted(lengths)}")
    return labels


def robust_thresholds(clean, attacked, exit_costs, target_cost, adversarial_cost=None, starts=None, grid=64,
                      steps=20):
    """Thresholds maximising the worst-case accuracy over ``attacked`` within the cost budgets.

    Args:
        clean: :class:`ExitOutcomes` of the calibration images.
        attacked: one :class:`ExitOutcomes` per adversarial set.
        exit_costs: cost of leaving at each exit (K,), every head computed.
        target_cost: the most the clean images may cost on average.
        adversarial_cost: the most each adversarial set may cost on average (None: no limit).
        starts: threshold vectors to start a search from; the best result is kept (default: one
            search from each exit's lowest candidate, where almost no sample leaves early).
        grid: candidate thresholds per exit: this many quantiles of its clean entropies, plus
            one that lets almost nothing out and one that lets everything out.
        steps: at most this many moves.

    A local search ranking policies by: within budget first, then the attacked
    accuracies from the worst up (the worst case, then the second worst, ...:
    a move that helps one attack without hurting the worst is progress), then
    the clean accuracy. Each move takes the best of the policies that differ
    from the current one in one threshold (every candidate) or in two (every
    4th candidate of each: a cost budget often lets one exit close only if
    another opens); a search stops when none is better. Raises
    :class:`InputError` when no policy found fits the budgets.
    """
    num_exits = clean.entropies.shape[1]
    candidates = [np.unique(np.maximum(np.concatenate([  # nearly closed, the quantiles, fully open
        [MIN_THRESHOLD], np.quantile(entropies, np.linspace(0, 1, grid)), [np.nextafter(entropies.max(), np.inf)]]),
        MIN_THRESHOLD)) for entropies in clean.entropies[:, :-1].T]
    limits = [target_cost] + [np.inf if adversarial_cost is None else adversarial_cost] * len(attacked)

    def scores(policies):  # (M, K-1) -> (M, 2 + A): within budget, attacked accuracies from the worst up, clean
        accuracy, within = [], np.ones(len(policies), bool)
        for outcomes, limit in zip([clean, *attacked], limits):
            exits = np.asarray(first_confident_exit(outcomes.entropies, policies[:, None, :]))
            within &= exit_costs[exits].mean(-1) <= limit * (1 + 1e-9)
            accuracy.append(np.take_along_axis(outcomes.correct[None], exits[..., None], -1)[..., 0].mean(-1))
        return np.column_stack([within, np.sort(np.stack(accuracy[1:], axis=1), axis=1), accuracy[0]])

    def best_of(policies):
        policy_scores = np.concatenate([scores(policies[i:i + 256]) for i in range(0, len(policies), 256)])
        i = np.lexsort(policy_scores.T[::-1])[-1]  # the largest, column by column
        return policies[i], policy_scores[i]

    def neighbours(thresholds):
        moves = [(k,) for k in range(num_exits - 1)] + list(itertools.combinations(range(num_exits - 1), 2))
        trials = []
        for exits in moves:
            values = [candidates[k] if len(exits) == 1 else candidates[k][::4] for k in exits]
            trial = np.repeat(thresholds[None], np.prod([len(v) for v in values]), axis=0)
            trial[:, list(exits)] = np.stack([g.ravel() for g in np.meshgrid(*values, indexing="ij")], axis=1)
            trials.append(trial)
        return np.concatenate(trials)

    results = []
    for start in [[c[0] for c in candidates]] if starts is None else starts:
        thresholds = np.asarray(start, float)
        best = scores(thresholds[None])[0]
        for _ in range(steps):
            trial, trial_score = best_of(neighbours(thresholds))
            if not tuple(trial_score) > tuple(best):
                break
            thresholds, best = trial, trial_score
        results.append(thresholds)
    thresholds, best = best_of(np.array(results))
    if not best[0]:
        raise InputError(f"no thresholds keep the average cost within target_cost={target_cost} on clean images"
                         + ("" if adversarial_cost is None else f" and adversarial_cost={adversarial_cost} on "
                            "every adversarial set") + ": raise the budget")
    return thresholds
