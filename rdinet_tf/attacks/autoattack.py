"""AutoAttack-style evaluation (Croce & Hein 2020) in TensorFlow, for multi-exit models.

Attack methods with the ``perturb(loss_fn, images, labels, seed)`` interface of
:mod:`rdinet_tf.attacks.attacks`, so each combines with every exit objective there
(``exit_k``, ``average``, ``routing`` on the adaptive model's routed output, ...):

* :class:`APGD`: auto-PGD, L-inf, with momentum 0.75, initial step 2 eps and
  step halving at the checkpoints of the reference code (fra31/auto-attack);
  it ascends whatever per-sample loss it is given: cross-entropy,
  :func:`dlr_loss`, or :func:`targeted_dlr_loss`.
* :class:`Square`: the score-based Square attack (random L-inf square updates,
  no gradients), with the reference's square-size schedule as AutoAttack runs it.

Where these differ from the reference, on purpose: APGD returns its
highest-loss point (the reference counts a sample as broken if any iterate was
misclassified by the attacked output; here success is judged afterwards, on the
adaptive model), and compares its first step with the loss at the start (the
reference's first count compares it with 0, an index that wraps around); Square
draws a square per sample at any position (the reference shares one square by
batch and never places it on the last row or column).

:func:`run_suite` runs the suite in the standard order (APGD-CE, APGD-DLR,
APGD-T, Square), each attack only on the samples the adaptive model still
classifies correctly, and raises gradient-masking flags.
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from rdinet_tf import attacks
from rdinet_tf.attacks.driver import AttackDriver
from rdinet_lite.errors import InputError

DLR_EPS = 1e-12


def _true_logit(labels, logits):
    return tf.reduce_sum(tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype) * logits, axis=-1)


def _best_other_logit(labels, logits):
    is_true = tf.one_hot(labels, tf.shape(logits)[-1], on_value=True, off_value=False)
    return tf.reduce_max(tf.where(is_true, tf.cast(-np.inf, logits.dtype), logits), axis=-1)


def _check_classes(logits, needed, loss_name):
    if logits.shape[-1] is not None and logits.shape[-1] < needed:
        raise InputError(f"the {loss_name} loss needs at least {needed} classes; got {logits.shape[-1]}")


def dlr_loss(labels, logits):
    """Per-sample difference of logits ratio: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3).

    pi orders the logits decreasingly; positive exactly when the sample is misclassified.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    _check_classes(logits, 3, "DLR")
    ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
    margin = _true_logit(labels, logits) - _best_other_logit(labels, logits)
    return -margin / (ranked[:, 0] - ranked[:, 2] + DLR_EPS)


def targeted_dlr_loss(labels, logits, targets):
    """Per-sample targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) for target classes t."""
    logits = tf.convert_to_tensor(logits, tf.float32)
    _check_classes(logits, 4, "targeted DLR")
    ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
    margin = _true_logit(labels, logits) - _true_logit(targets, logits)
    return -margin / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + DLR_EPS)


def margin_loss(labels, logits):
    """Per-sample max_{i != y} z_i - z_y: the score Square ascends; positive when misclassified."""
    logits = tf.convert_to_tensor(logits, tf.float32)
    return _best_other_logit(labels, logits) - _true_logit(labels, logits)


def checkpoints(steps):
    """APGD's step-size checkpoints (1-based iterations) as the reference code sets them.

    Intervals in whole steps: the first ``max(int(0.22 steps), 1)``, each next one
    ``max(int(0.03 steps), 1)`` shorter, down to ``max(int(0.06 steps), 1)``. At 100
    steps this is the paper's ceil(p_j * steps) (22, 41, ..., 99); with few steps
    the reference's integer intervals check more often than the paper's fractions.
    """
    interval, shrink, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, mark = [], 0
    while mark + interval <= steps:
        mark += interval
        marks.append(mark)
        interval = max(interval - shrink, shortest)
    return marks


def _per_sample(mask):
    """A (N,) condition broadcast over an (N, H, W, C) image batch."""
    return mask[:, None, None, None]


@keras.saving.register_keras_serializable(package="rdinet_tf")
@dataclasses.dataclass(frozen=True)
class APGD(attacks.AttackMethod):
    """Auto-PGD (L-inf): step 2 eps halved at checkpoints, momentum; returns the best point.

    At checkpoint w_j (:func:`checkpoints`) a sample's step is halved, and it
    restarts from its best point, when at most ``rho * (w_j - w_{j-1})`` of its
    steps since w_{j-1} raised the loss over the step before (the reference's
    ``<=``), or when its step was not halved at w_{j-1} and its best loss has
    not grown since (not at the first checkpoint, as in the reference). After a
    restart the momentum is the move from the point before the checkpoint to the
    best point, and the next step's loss is compared with the checkpoint's, as in
    the reference. ``steps`` iterations after the random start (a uniform point
    scaled to the eps-ball's surface, as in the reference).
    """

    eps: float
    steps: int = 100
    rho: float = 0.75
    momentum: float = 0.75
    random_start: bool = True
    name: str = "apgd"

    def __post_init__(self):
        if not (math.isfinite(self.eps) and self.eps >= 0 and self.steps >= 1):
            raise InputError(f"{self.name} needs eps >= 0 and steps >= 1; got eps={self.eps}, steps={self.steps}")

    def perturb(self, loss_fn, images, labels, seed):
        """Ascend ``loss_fn(x, labels) -> (N,)`` within the eps-ball around ``images``."""
        images = tf.convert_to_tensor(images, tf.float32)

        def project(x):
            return attacks.project_linf(x, images, self.eps)

        start = images
        if self.random_start:
            noise = tf.random.stateless_uniform(tf.shape(images), seed, -1.0, 1.0)
            start = project(images + self.eps * noise / tf.reduce_max(tf.abs(noise), [1, 2, 3], keepdims=True))
        loss, gradient = attacks.loss_and_gradient(loss_fn, start, labels)
        marks = checkpoints(self.steps)
        lengths = dict(zip(marks, np.diff([0, *marks])))
        interval = tf.constant([float(lengths.get(t + 1, 0)) for t in range(self.steps)])  # 0: no checkpoint
        state = {
            "x": start, "previous": start, "gradient": gradient, "loss": loss,
            "best": start, "best_loss": loss, "best_gradient": gradient,
            "step_size": tf.fill(tf.shape(loss), 2.0 * self.eps),
            "successes": tf.zeros_like(loss), "loss_at_check": loss,
            "halved_at_check": tf.ones_like(loss, tf.bool),
        }

        def step(t, s):
            towards = project(s["x"] + _per_sample(s["step_size"]) * tf.sign(s["gradient"]))
            weight = tf.where(t > 0, self.momentum, 1.0)
            x = project(s["x"] + weight * (towards - s["x"]) + (1.0 - weight) * (s["x"] - s["previous"]))
            loss, gradient = attacks.loss_and_gradient(loss_fn, x, labels)
            successes = s["successes"] + tf.cast(loss > s["loss"], tf.float32)
            improved = loss > s["best_loss"]
            best = tf.where(_per_sample(improved), x, s["best"])
            best_gradient = tf.where(_per_sample(improved), gradient, s["best_gradient"])
            best_loss = tf.where(improved, loss, s["best_loss"])
            check = tf.gather(interval, t) > 0
            stalled = tf.logical_and(tf.logical_not(s["halved_at_check"]), best_loss <= s["loss_at_check"])
            halve = tf.logical_and(check, tf.logical_or(successes <= self.rho * tf.gather(interval, t), stalled))
            restart = _per_sample(halve)
            return {
                "x": tf.where(restart, best, x), "previous": s["x"],
                "gradient": tf.where(restart, best_gradient, gradient), "loss": loss,
                "best": best, "best_loss": best_loss, "best_gradient": best_gradient,
                "step_size": tf.where(halve, s["step_size"] / 2.0, s["step_size"]),
                "successes": tf.where(check, 0.0, successes),
                "loss_at_check": tf.where(check, best_loss, s["loss_at_check"]),
                "halved_at_check": tf.where(check, halve, s["halved_at_check"]),
            }

        return attacks.iterate(step, state, self.steps)["best"]


def square_fraction(iteration, p_init=0.8):
    """The Square attack's share p of pixels a square covers at the 0-based ``iteration``.

    p_init halved each time the iteration passes 10, 50, 200, 500, 1000, 2000,
    4000, 6000 and 8000, whatever the number of queries: the reference's
    schedule with its rescaling off, as AutoAttack runs Square (``resc_schedule=False``;
    at 5,000 queries p ends at p_init / 128).
    """
    halvings = sum(iteration > bound for bound in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2**halvings


@keras.saving.register_keras_serializable(package="rdinet_tf")
@dataclasses.dataclass(frozen=True)
class Square(attacks.AttackMethod):
    """Square attack (L-inf, score-based): random squares set to x +- eps, kept when the loss rises.

    Starts from vertical stripes of +-eps; each of ``queries`` iterations
    proposes, per sample, one square (side ``round(sqrt(p * H * W))`` from the
    ``p`` of :func:`square_fraction`, at least 1 and at most the image's side)
    at a random place with a random sign per channel.
    Uses only values of the loss, never gradients.
    """

    eps: float
    queries: int = 5000
    p_init: float = 0.8
    name: str = "square"

    def __post_init__(self):
        if not (self.eps >= 0 and self.queries >= 1 and 0 < self.p_init <= 1):
            raise InputError(f"{self.name} needs eps >= 0, queries >= 1 and 0 < p_init <= 1; got "
                             f"eps={self.eps}, queries={self.queries}, p_init={self.p_init}")

    def perturb(self, loss_fn, images, labels, seed):
        """Raise ``loss_fn(x, labels) -> (N,)`` within the eps-ball around ``images`` by random search."""
        images = tf.convert_to_tensor(images, tf.float32)
        height, width, channels = images.shape[1:]
        count = tf.shape(images)[0]
        seed = tf.convert_to_tensor(seed)

        def signs(shape, key):
            return tf.where(tf.random.stateless_uniform(shape, key) < 0.5, -1.0, 1.0)

        stripes = signs(tf.stack([count, 1, width, channels]), tf.random.experimental.stateless_fold_in(seed, 0))
        best = tf.clip_by_value(images + self.eps * stripes, 0.0, 1.0)
        sizes = tf.constant([min(max(round(math.sqrt(square_fraction(t, self.p_init) * height * width)), 1),
                                 height, width) for t in range(self.queries)])
        rows = tf.range(height)[None, :, None, None]
        columns = tf.range(width)[None, None, :, None]

        def step(t, s):
            best, best_loss = s
            key = tf.random.experimental.stateless_fold_in(seed, t + 1)
            size = tf.gather(sizes, t)
            corner = tf.random.stateless_uniform(tf.stack([count, 2]), key)
            top = tf.cast(corner[:, 0] * tf.cast(height - size + 1, tf.float32), tf.int32)[:, None, None, None]
            left = tf.cast(corner[:, 1] * tf.cast(width - size + 1, tf.float32), tf.int32)[:, None, None, None]
            inside = (rows >= top) & (rows < top + size) & (columns >= left) & (columns < left + size)
            square = signs(tf.stack([count, 1, 1, channels]), tf.random.experimental.stateless_fold_in(key, 1))
            candidate = tf.where(inside, tf.clip_by_value(images + self.eps * square, 0.0, 1.0), best)
            candidate = tf.ensure_shape(candidate, best.shape)
            loss = tf.ensure_shape(loss_fn(candidate, labels), best_loss.shape)
            improved = loss > best_loss
            return tf.where(_per_sample(improved), candidate, best), tf.where(improved, loss, best_loss)

        return attacks.iterate(step, (best, loss_fn(best, labels)), self.queries)[0]


@dataclasses.dataclass(frozen=True)
class AutoAttack:
    """Settings of the suite run by :func:`run_suite` (the reference's: 100 steps, 5000 queries, 9 targets)."""

    eps: float
    steps: int = 100  # APGD iterations
    queries: int = 5000  # Square iterations
    num_targets: int = 9  # APGD-T target classes: the 2nd .. (num_targets+1)-th most likely
    tolerance: float = 0.02  # slack of the sanity flags, as a share of the clean-correct samples
    check_samples: int = 256  # clean-correct samples the sanity runs attack
    # In a robustness report: attack only the samples every attack of the report left correct (AutoAttack's
    # cascade with the report's attacks in front). The same per-sample worst case in less time; the suite's
    # robust accuracy then counts the report's attacks too.
    after_report: bool = False


@dataclasses.dataclass(frozen=True)
class SuiteRun:
    """One attack with one objective, on the samples still correct before it."""

    attack: str
    objective: str
    attacked: int  # samples still correct before this run
    robust_accuracy: float  # accuracy over all samples after this run (cumulative)


@dataclasses.dataclass(frozen=True)
class AutoAttackResult:
    """The suite's outcome for the adaptive model; see :func:`run_suite`."""

    settings: dict
    num_samples: int
    clean_accuracy: float
    robust_accuracy: float  # a sample counts only if it survives every run
    robust_samples: list  # indices of the samples that survive every run
    runs: list  # SuiteRun per (attack, objective), in the order run
    checks: dict  # numbers behind the flags (shares of the clean-correct samples)
    flags: dict  # flag name -> raised; any raised flag is a sign of gradient masking

    def table(self):
        """The suite as printable lines."""
        lines = [f"{'autoattack run':<28}{'attacked':>9}{'robust':>9}"]
        lines += [f"{run.attack + ' ' + run.objective:<28}{run.attacked:>9}{run.robust_accuracy:>9.2%}"
                  for run in self.runs]
        label = "report + autoattack" if self.settings.get("after_report") else "autoattack robust accuracy"
        lines.append(f"{label:<28}{'':>9}{self.robust_accuracy:>9.2%}")
        lines += [f"WARNING: {name} ({_FLAG_TEXT[name]}): possible gradient masking"
                  for name, raised in self.flags.items() if raised]
        return "\n".join(lines)


_FLAG_TEXT = {
    "square_beats_gradient": "Square found adversarial inputs the gradient attacks missed",
    "unbounded_eps_not_zero": "APGD-CE with eps = 1 left accuracy above zero",
    "more_steps_raise_accuracy": "APGD-CE with more steps left a higher accuracy",
}


def sanity_flags(checks, tolerance):
    """Gradient-masking flags from the check numbers (shares of the clean-correct samples)."""
    return {
        "square_beats_gradient": checks["square_extra"] > tolerance,
        "unbounded_eps_not_zero": checks["unbounded_accuracy"] > tolerance,
        "more_steps_raise_accuracy": checks["more_steps_accuracy"] > checks["fewer_steps_accuracy"] + tolerance,
    }


def _target_logits(model, objective, policy, images):
    """The output an objective attacks, whose ranking picks APGD-T's targets: its exit, else the routed one."""
    exit_index = attacks.check_objective(objective, model.num_exits, policy)
    if exit_index is not None:
        return model.exit_logits(images, [exit_index])[0]
    return policy.route(model.exit_logits(images))[0]


def suite_attack(model, method, objective, policy, logit_loss, targeted):
    """One suite attack as a compiled ``f(images, labels, target_rank, seed) -> adversarial images``.

    ``method`` (APGD or Square) attacks ``objective`` with ``logit_loss``; with ``targeted`` the loss is
    the targeted DLR towards the class ranked ``target_rank`` (1: the runner-up) by the attacked output.
    """

    @tf.function(reduce_retracing=True)
    def run(images, labels, target_rank, seed):
        if targeted:
            ranked = tf.argsort(_target_logits(model, objective, policy, images), axis=-1, direction="DESCENDING")
            targets = tf.gather(ranked, target_rank, axis=1)
            loss = lambda y, z: targeted_dlr_loss(y, z, targets)  # noqa: E731
        else:
            loss = logit_loss
        return attacks.generate(model, images, labels, method, objective, policy, seed, logit_loss=loss)

    return run


def _suite_plan(settings):
    """``(name, method, logit loss, targeted)`` of each suite attack, in the standard order."""
    return [("apgd-ce", APGD(settings.eps, settings.steps), attacks.cross_entropy, False),
            ("apgd-dlr", APGD(settings.eps, settings.steps), dlr_loss, False),
            ("apgd-t", APGD(settings.eps, settings.steps), None, True),
            ("square", Square(settings.eps, settings.queries), margin_loss, False)]


def attack_survivors(driver, run, images, labels, robust, target_ranks, key=None):
    """Attack the samples still ``robust`` with ``run`` (a :func:`suite_attack`, described by ``key`` for an
    attack cache) once per target rank, batch by batch through the :class:`AttackDriver`; update ``robust``
    (N,) bool in place from the adaptive model's answers on the adversarial images."""
    for target_rank in target_ranks:
        indices = np.flatnonzero(robust)
        if indices.size:
            adversarial = driver.attack(lambda x, y, seed: run(x, y, tf.constant(target_rank), seed),
                                        images[indices], labels[indices],
                                        key=None if key is None else f"{key} target rank {target_rank}")
            robust[indices] = driver.still_correct(adversarial, labels[indices])


def _masking_checks(driver, images, labels, clean_correct, settings, square_extra):
    """The numbers behind the gradient-masking flags (shares of the checked clean-correct samples)."""
    chosen = clean_correct[:settings.check_samples]

    def accuracy(method):
        """Share of the checked samples that APGD-CE on ``routing`` leaves correct."""
        if not chosen.size:
            return 0.0
        run = suite_attack(driver.model, method, "routing", driver.policy, attacks.cross_entropy, False)
        adversarial = driver.attack(lambda x, y, seed: run(x, y, tf.constant(0), seed),
                                    images[chosen], labels[chosen], key=f"masking check apgd-ce {method!r} routing")
        return float(driver.still_correct(adversarial, labels[chosen]).mean())

    return {
        "square_extra": square_extra,
        "unbounded_accuracy": accuracy(APGD(1.0, settings.steps, random_start=False)),
        "fewer_steps_accuracy": accuracy(APGD(settings.eps, max(settings.steps // 4, 1))),
        "more_steps_accuracy": accuracy(APGD(settings.eps, settings.steps)),
    }


def run_suite(model, images, labels, settings, policy=None, objectives=None, batch_size=256, seed=0,
              survivors=None):
    """Run the AutoAttack-style suite against the adaptive ``model`` -> :class:`AutoAttackResult`.

    Order: APGD-CE, APGD-DLR, APGD-T (``settings.num_targets`` targets), Square;
    each attack with every objective (default: ``routing`` then each exit and
    ``average``; ``max_average`` only selects among the single-exit attacks,
    already run), each run only on the samples the adaptive model still gets
    right. Sanity runs on the clean-correct samples (APGD-CE on ``routing``
    from the clean image with eps = 1; APGD-CE with a quarter of the steps)
    and Square's extra successes give the gradient-masking flags. With
    ``settings.after_report`` the runs attack only ``survivors`` ((N,) bool:
    the samples a robustness report's attacks left correct); the sanity runs
    still take the clean-correct samples.
    """
    if settings.after_report != (survivors is not None):
        raise InputError("the suite takes survivors exactly when AutoAttack(after_report=True): run it through "
                         "robustness_report(..., autoattack=...), or set after_report=False")
    driver = AttackDriver(model, policy or model.exit_policy, batch_size, seed)
    images = model.check_images(images)
    labels = np.asarray(labels).reshape(-1)
    objectives = objectives or ["routing", *[f"exit_{k + 1}" for k in range(model.num_exits)], "average"]
    for objective in objectives:
        attacks.check_objective(objective, model.num_exits, driver.policy)
    robust = driver.still_correct(images, labels)
    clean_correct = np.flatnonzero(robust)
    if settings.after_report:
        robust &= np.asarray(survivors, dtype=bool).reshape(-1)
    num_targets = min(settings.num_targets, int(model.outputs[-1].shape[-1]) - 1)
    runs, correct_before_square = [], 0
    for name, method, logit_loss, targeted in _suite_plan(settings):
        correct_before_square = int(robust.sum())
        for objective in objectives:
            attacked = int(robust.sum())
            run = suite_attack(model, method, objective, driver.policy, logit_loss, targeted)
            attack_survivors(driver, run, images, labels, robust,
                             range(1, num_targets + 1) if targeted else [0], key=f"{name} {method!r} {objective}")
            runs.append(SuiteRun(name, objective, attacked, float(robust.mean())))
    square_extra = (correct_before_square - int(robust.sum())) / max(clean_correct.size, 1)
    checks = _masking_checks(driver, images, labels, clean_correct, settings, square_extra)
    return AutoAttackResult(
        settings=dataclasses.asdict(settings), num_samples=len(labels),
        clean_accuracy=clean_correct.size / max(len(labels), 1), robust_accuracy=float(robust.mean()),
        robust_samples=np.flatnonzero(robust).tolist(), runs=runs, checks=checks,
        flags=sanity_flags(checks, settings.tolerance))
