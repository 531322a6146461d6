"""Robustness report of the adaptive (early-exit) model: TA, ATA, cost and exits per attack.

Thresholds come from the model's saved exit policy (calibrated on held-out
data by ``rdinet-train``) or are calibrated on the dataset's validation split,
never on the test set being reported.

Besides accuracy, each attack method also runs as two slowdown attacks (the
``"slowdown"`` objective: side exits pushed to uniform; ``"threshold_slowdown"``:
each side exit lifted just past its threshold): their average cost
("adversarial MFLOPs") and the share of the clean savings they leave,
``(cost_full - cost_attacked) / (cost_full - cost_clean)``, in both FLOPs
conventions. Their accuracies count in the worst cases like every other
attack's. ``autoattack=AutoAttack(eps)`` adds the suite of
:mod:`rdinet_tf.attacks.autoattack` with its gradient-masking flags.

Accuracy against cost: :func:`tradeoff` sweeps the cost target of the
``"target_cost"`` calibration and scores TA and worst-case ATA at each point;
:func:`plot_tradeoff` draws such curves beside single models (single-exit,
pruned) as points. :func:`calibrate_robust` chooses thresholds for worst-case
ATA within a cost budget.
"""

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from rdinet_tf.architecture import flops
from rdinet_lite.accounting import CONVENTIONS, check_convention, exit_shares
from rdinet_tf import attacks as attack_lib
from rdinet_tf.attacks import autoattack as autoattack_lib
from rdinet_tf.attacks.driver import AttackDriver
from rdinet_lite.errors import InputError
from rdinet_lite.files import publish
from rdinet_tf.exits.policy import ExitPolicy


@dataclasses.dataclass(frozen=True)
class AdaptiveResult:
    """The adaptive model on one input set (clean or one attack)."""

    name: str
    accuracy: float
    mflops: float  # honest convention (10^6 MACs, rejected heads included)
    paper_mflops: float  # paper convention (2^20 conv MACs, own head only)
    exit_shares: list


@dataclasses.dataclass(frozen=True)
class SlowdownResult(AdaptiveResult):
    """The adaptive model under a slowdown attack, with the share of the clean savings kept.

    ``savings_kept`` = (full - attacked) / (full - clean) cost, full = the last
    exit's; None when the clean model saves nothing.
    """

    full_mflops: float
    paper_full_mflops: float
    savings_kept: float
    paper_savings_kept: float


def savings_kept(full, clean, attacked):
    """(full - attacked) / (full - clean): 1 = the attack costs nothing extra, 0 = every input runs in full."""
    saved = full - clean
    return None if saved <= 1e-9 * full else float((full - attacked) / saved)


LEGEND = ("Legend: TA = clean accuracy of the adaptive model; ATA = its accuracy on attacked images; worst case, "
          "per sample = a sample counts only if it survives every attack form above (the headline); MFLOPs = "
          "average cost per image in 10^6 conv+dense MACs, the heads of the exits an input passed included "
          "(honest); paper = 2^20 conv MACs, own head only (the paper's convention); exit shares = % of images "
          "leaving at each exit; savings kept = (full - attacked cost) / (full - clean cost): 100 = the attack "
          "costs nothing, 0 = every image runs the whole network.")


@dataclasses.dataclass(frozen=True)
class RobustnessReport:
    """TA, ATA per attack, worst cases and per-exit accuracies; see :func:`robustness_report`."""

    num_samples: int
    thresholds: list
    attack_methods: list
    clean: AdaptiveResult
    attacks: list  # AdaptiveResult per (method, objective)
    worst_case_ata: float  # lowest ATA over the attacks (slowdown attacks included)
    worst_case_attack: str
    per_sample_worst_case_ata: float  # a sample counts only if it survives every attack
    exit_clean_accuracy: list  # each exit alone, clean
    exit_adversarial_accuracy: dict  # method -> each exit alone under the attack on that exit
    # method -> [j][k]: share of the exit_{j+1} attack's successes that also fool exit k+1 (transfer_rates)
    exit_transfer: dict = dataclasses.field(default_factory=dict)
    exit_transfer_counts: dict = dataclasses.field(default_factory=dict)  # method -> [j][k]: samples of each rate
    slowdown: list = dataclasses.field(default_factory=list)  # SlowdownResult per method and slowdown objective
    autoattack: autoattack_lib.AutoAttackResult = None
    per_sample_worst_case_with_autoattack: float = None  # survives every attack above and every suite run

    def to_dict(self):
        return dataclasses.asdict(self)

    def table(self):
        """The report as printable, titled tables with a legend; the headline is the per-sample worst case."""
        lines = [f"Robustness of the adaptive model (entropy early exit, thresholds "
                 f"{', '.join(f'{t:.4g}' for t in self.thresholds)}) on {self.num_samples} test images",
                 "attacks: " + "; ".join(describe_attack(m) for m in self.attack_methods), ""]
        max_average = [r for r in self.attacks if r.name.endswith(" max_average")]
        lines.append(f"HEADLINE  worst-case ATA, per sample: {self.per_sample_worst_case_ata:.2%}"
                     + (f"   (paper's strongest form, max-average: "
                        f"{', '.join(f'{r.accuracy:.2%}' for r in max_average)})" if max_average else ""))
        if self.autoattack is not None:
            lines.append(f"          with the AutoAttack-style suite too: {self.per_sample_worst_case_with_autoattack:.2%}")
        lines += ["", f"TA and ATA per attack form ({self.num_samples} images)",
                  f"{'inputs':<28}{'accuracy':>9}{'MFLOPs':>9}{'paper':>9}   exit shares (%)"]
        for result in [self.clean, *self.attacks]:
            shares = " ".join(f"{100 * s:.0f}" for s in result.exit_shares)
            lines.append(f"{result.name:<28}{result.accuracy:>9.2%}{result.mflops:>9.3f}"
                         f"{result.paper_mflops:>9.3f}   {shares}")
        lines.append(f"{'worst form (' + self.worst_case_attack + ')':<28}{self.worst_case_ata:>9.2%}")
        lines.append(f"{'worst case, per sample':<28}{self.per_sample_worst_case_ata:>9.2%}")
        if self.slowdown:
            lines += ["", "Cost under the slowdown attacks (they attack the early exits' confidence, not the answer)",
                      f"{'inputs':<28}{'accuracy':>9}{'MFLOPs':>9}{'paper':>9}   savings kept (%, honest / paper)"]
            for result in self.slowdown:
                kept = " / ".join("-" if k is None else f"{round(100 * k):d}"
                                  for k in (result.savings_kept, result.paper_savings_kept))
                lines.append(f"{result.name:<28}{result.accuracy:>9.2%}{result.mflops:>9.3f}"
                             f"{result.paper_mflops:>9.3f}   {kept}")
        if self.autoattack is not None:
            lines += ["", self.autoattack.table()]
        methods = list(self.exit_adversarial_accuracy)
        lines += ["", "Each exit alone (no early exit), clean and under the attack on that exit",
                  f"{'exit':<12}{'clean':>9}" + "".join(f"{m:>14}" for m in methods)]
        for k, clean in enumerate(self.exit_clean_accuracy):
            lines.append(f"exit_{k + 1:<7}{clean:>9.2%}" + "".join(
                f"{_percent(self.exit_adversarial_accuracy[m][k]):>14}" for m in methods))
        for method, rates in self.exit_transfer.items():
            counts = self.exit_transfer_counts.get(method)
            lines += ["", f"Transfer of the {method} attack on one exit to the others "
                      "(share of its successes that also fool the other exit; samples in brackets)",
                      f"{'':<14}" + "".join(f"{'to exit_' + str(k + 1):>15}" for k in range(len(rates)))]
            for j, row in enumerate(rates):
                lines.append(f"{'from exit_' + str(j + 1):<14}" + "".join(
                    f"{_percent(rate, 0) + ('' if counts is None else f' ({counts[j][k]})'):>15}"
                    for k, rate in enumerate(row)))
        lines += ["", textwrap.fill(LEGEND, 110)]
        return "\n".join(lines)


def describe_attack(config):
    """One attack method's settings in words, e.g. ``pgd: PGD-20, eps 0.0314, step 0.00784, random start``."""
    name = config.get("name", "?")
    if "steps" in config and "step_size" in config:
        start = ", random start" if config.get("random_start") else ""
        return f"{name}: PGD-{config['steps']}, eps {config['eps']:.4g}, step {config['step_size']:.4g}{start}"
    if name == "wrm":
        return f"wrm: {config['steps']} steps, eps {config['eps']:.4g} (L2 Lagrangian)"
    settings = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in config.items() if k != "name")
    return f"{name}: {settings}"


def _percent(value, digits=2):
    return "-" if value is None or np.isnan(value) else f"{100 * value:.{digits}f}%"


SLOWDOWN_OBJECTIVES = ("slowdown", "threshold_slowdown")


def transfer_rates(labels, clean_logits, exit_attack_logits):
    """(K, K) transfer matrix of the single-exit attacks; NaN where no sample qualifies.

    ``exit_attack_logits[j]``: every exit's logits on the attack made on exit j.
    Entry [j][k]: among the samples exits j and k both classify correctly clean
    and the exit-j attack makes exit j get wrong, the share that exit k gets wrong
    too (the diagonal is 1).
    """
    return transfer_counts(labels, clean_logits, exit_attack_logits)[0]


def transfer_counts(labels, clean_logits, exit_attack_logits):
    """``(rates, counts)``: :func:`transfer_rates` and, per entry, the number of samples it is a share of."""
    clean_correct = np.stack([z.argmax(-1) == labels for z in clean_logits])
    rates = np.full((len(clean_logits), len(clean_logits)), np.nan)
    counts = np.zeros(rates.shape, dtype=int)
    for j, attacked in enumerate(exit_attack_logits):
        fooled = np.stack([z.argmax(-1) != labels for z in attacked])
        for k in range(len(clean_logits)):
            qualified = clean_correct[j] & clean_correct[k] & fooled[j]
            counts[j, k] = qualified.sum()
            if qualified.any():
                rates[j, k] = fooled[k][qualified].mean()
    return rates, counts


def default_objectives(model, policy):
    """Every single exit, average, max-average; with a policy also routing-aware, and exit hijack when the
    policy leaves a side exit open (with every side exit closed there is nowhere to hijack to)."""
    names = [f"exit_{k + 1}" for k in range(model.num_exits)] + ["average", "max_average"]
    if policy is not None:
        names += ["routing"] + (["exit_hijack"] if policy.has_open_side_exit else [])
    return names


def robustness_report(model, images, labels, attacks, *, policy=None, objectives=None, slowdown=True,
                      autoattack=None, batch_size=256, seed=0, progress=True):
    """Evaluate the adaptive ``model`` (entropy early exit) against each attack.

    Args:
        model: a multi-exit model.
        images, labels: test set (float images in [0, 1], integer labels).
        attacks: attack methods, e.g. ``[PGD(0.3, 0.01, 40)]``; each is combined
            with every objective.
        policy: the exit policy (default: ``model.exit_policy``); it must come
            from held-out data.
        objectives: attack objectives (default: :func:`default_objectives`). When every
            single exit is among them, max-average is selected from their attacks
            instead of running its K attacks again (same seeds, same result).
        slowdown: also run each method as the two slowdown attacks (cost, savings kept), when the
            policy leaves a side exit open (with every side exit closed there are no savings to attack).
        autoattack: an :class:`rdinet_tf.attacks.autoattack.AutoAttack` to add that suite (with
            ``objectives`` if given, else the suite's default objectives); with its ``after_report``
            it attacks only the samples every attack above left correct.
        batch_size, seed: batches of the attacks; batch i is seeded ``seed + i``.
        progress: show a progress bar.
    """
    driver = AttackDriver(model, policy or model.exit_policy, batch_size, seed)
    if not attacks:
        raise InputError("pass at least one attack method, e.g. attacks=[PGD(eps, step_size, steps)]")
    images = model.check_images(images)
    labels = np.asarray(labels).reshape(-1)
    suite_objectives = objectives
    objectives = objectives or default_objectives(model, driver.policy)
    for objective in objectives:
        attack_lib.check_objective(objective, model.num_exits, driver.policy)
    scorer = _AdaptiveScorer(driver, labels)
    clean_logits = driver.exit_logits(images)
    clean, _ = scorer.score("clean (TA)", clean_logits)
    batches = -(-len(images) // batch_size)
    slowdown_objectives = SLOWDOWN_OBJECTIVES if slowdown and driver.policy.has_open_side_exit else ()
    bar = tqdm(total=len(attacks) * (len(objectives) + len(slowdown_objectives)) * batches, desc="attacks",
               disable=not progress, leave=False)
    results, survivors, exit_adversarial = [], np.ones(len(labels), dtype=bool), {}
    exit_transfer, exit_transfer_counts = {}, {}
    for method in attacks:
        exit_adversarial[method.name] = [float("nan")] * model.num_exits
        exit_attack_logits = {}
        for objective, adversarial in _objective_attacks(driver, method, objectives, images, labels, bar):
            adversarial_logits = driver.exit_logits(adversarial)
            result, correct = scorer.score(f"{method.name} {objective}", adversarial_logits)
            results.append(result)
            survivors &= correct
            exit_index = attack_lib.check_objective(objective, model.num_exits, driver.policy)
            if exit_index is not None:
                exit_adversarial[method.name][exit_index] = float(
                    np.mean(adversarial_logits[exit_index].argmax(-1) == labels))
                exit_attack_logits[exit_index] = adversarial_logits
        if len(exit_attack_logits) == model.num_exits > 1:
            rates, counts = transfer_counts(labels, clean_logits,
                                            [exit_attack_logits[k] for k in range(model.num_exits)])
            exit_transfer[method.name], exit_transfer_counts[method.name] = rates.tolist(), counts.tolist()
    slowdown_results = []
    for method in attacks:
        for objective in slowdown_objectives:
            result, correct = scorer.slowdown(f"{method.name} {objective}", clean,
                                              _attack(driver, method, objective, images, labels, bar))
            slowdown_results.append(result)
            survivors &= correct
    bar.close()
    worst = min(results + slowdown_results, key=lambda r: r.accuracy)
    suite = None if autoattack is None else autoattack_lib.run_suite(
        model, images, labels, autoattack, driver.policy, suite_objectives, batch_size, seed,
        survivors=survivors if autoattack.after_report else None)
    return RobustnessReport(
        num_samples=len(labels),
        thresholds=driver.policy.thresholds.tolist(),
        attack_methods=[dataclasses.asdict(m) for m in attacks],
        clean=clean,
        attacks=results,
        worst_case_ata=worst.accuracy,
        worst_case_attack=worst.name,
        per_sample_worst_case_ata=float(survivors.mean()),
        exit_clean_accuracy=[float(np.mean(z.argmax(-1) == labels)) for z in clean_logits],
        exit_adversarial_accuracy=exit_adversarial,
        exit_transfer=exit_transfer,
        exit_transfer_counts=exit_transfer_counts,
        slowdown=slowdown_results,
        autoattack=suite,
        per_sample_worst_case_with_autoattack=None if suite is None else float(
            survivors[suite.robust_samples].sum() / len(labels)),
    )


class _AdaptiveScorer:
    """Accuracy, cost and exit shares of the adaptive model on one input set."""

    def __init__(self, driver, labels):
        self.driver, self.labels = driver, labels
        self.costs = {c: flops.exit_costs(driver.model, c, thresholds=driver.policy.thresholds)
                      for c in CONVENTIONS}

    def score(self, name, exit_logits):
        """``(AdaptiveResult, correct per sample)`` from every exit's logits."""
        predictions, exits = self.driver.adaptive(exit_logits)
        correct = predictions == self.labels
        result = AdaptiveResult(name, float(correct.mean()), float(self.costs["honest"][exits].mean()),
                                float(self.costs["paper"][exits].mean()),
                                exit_shares(exits, self.driver.model.num_exits).tolist())
        return result, correct

    def slowdown(self, name, clean, adversarial):
        """``(SlowdownResult, correct per sample)`` of slowdown images."""
        result, correct = self.score(name, self.driver.exit_logits(adversarial))
        full, paper_full = float(self.costs["honest"][-1]), float(self.costs["paper"][-1])
        return SlowdownResult(
            **dataclasses.asdict(result), full_mflops=full, paper_full_mflops=paper_full,
            savings_kept=savings_kept(full, clean.mflops, result.mflops),
            paper_savings_kept=savings_kept(paper_full, clean.paper_mflops, result.paper_mflops)), correct


def _attack(driver, method, objective, images, labels, bar):
    """Adversarial images of ``method`` x ``objective``, one progress step per batch (made or loaded)."""
    attack_fn = attack_lib.attack_function(driver.model, method, objective, driver.policy)
    made = 0

    def run(x, y, seed):
        nonlocal made
        made += 1
        bar.update()
        return attack_fn(x, y, seed)

    adversarial = driver.attack(run, images, labels, key=f"{method!r} {objective}")
    bar.update(-(-len(images) // driver.batch_size) - made)  # the batches loaded from an attack cache
    return adversarial


def _objective_attacks(driver, method, objectives, images, labels, bar):
    """``(objective, adversarial images)`` for each objective, in order.

    Max-average is selected from the single-exit attacks already made when
    every exit is among ``objectives`` (same seeds: the same result as running it anew).
    """
    model = driver.model
    exit_attacks = {}
    select = tf.function(lambda candidates, y: attack_lib.select_max_average(model, candidates, y),
                         reduce_retracing=True)
    for objective in objectives:
        if objective == "max_average" and len(exit_attacks) == model.num_exits:
            def pick(_, y, *candidates):
                bar.update()
                return select(list(candidates), y)

            adversarial = driver.map_batches(pick, labels, *(exit_attacks[k] for k in range(model.num_exits)))
        else:
            adversarial = _attack(driver, method, objective, images, labels, bar)
        exit_index = attack_lib.check_objective(objective, model.num_exits, driver.policy)
        if exit_index is not None:
            exit_attacks[exit_index] = adversarial
        yield objective, adversarial


def calibrate_robust(model, images, labels, attack, target_cost, *, adversarial_cost=None, convention="honest",
                     objectives=None, batch_size=256, seed=0, progress=True):
    """An :class:`ExitPolicy` chosen for worst-case adversarial accuracy within a cost budget.

    Attacks the held-out ``images`` with ``attack`` under each of ``objectives``
    (default: every single exit, average and max-average: attacks that do not
    depend on the thresholds being chosen; batch i seeded ``seed + i``), then
    calibrates with :meth:`ExitPolicy.robust`: the thresholds with the highest
    adaptive accuracies under those attacks, the worst first
    (:func:`rdinet_tf.exits.policy.robust_thresholds`), at an average cost of at most
    ``target_cost`` MFLOPs (``convention``) on the clean images and, if given,
    ``adversarial_cost`` on each attacked set. Never use test images here.
    """
    # The cost-only policy checks the budget before any attack (and routes nothing the attacks use).
    start = ExitPolicy.for_cost(model, images, target_cost, convention, batch_size)
    objectives = objectives or default_objectives(model, None)
    if "routing" in objectives:
        raise InputError("the routing attack depends on the thresholds being calibrated: leave it out of "
                         "objectives (evaluate the calibrated policy against it with robustness_report)")
    driver = AttackDriver(model, start, batch_size, seed)
    images = model.check_images(images)
    labels = np.asarray(labels).reshape(-1)
    with tqdm(total=len(objectives) * -(-len(images) // batch_size), desc="calibration attacks",
              disable=not progress, leave=False) as bar:
        adversarial = [x for _, x in _objective_attacks(driver, attack, objectives, images, labels, bar)]
    return ExitPolicy.robust(model, images, labels, adversarial, target_cost, adversarial_cost, convention,
                             batch_size)


@dataclasses.dataclass(frozen=True)
class TradeoffPoint:
    """One model or policy on the accuracy-versus-cost plane (test images)."""

    label: str
    mflops: float  # honest convention
    paper_mflops: float
    accuracy: float  # TA
    worst_case_ata: float  # lowest ATA over the attack forms
    per_sample_worst_case_ata: float = None  # a sample counts only if it survives every attack form
    thresholds: list = None  # the policy's, for a point of an RDI curve

    @classmethod
    def from_report(cls, label, report):
        """The point of a :class:`RobustnessReport`: its clean TA and cost, its worst cases."""
        return cls(label, report.clean.mflops, report.clean.paper_mflops, report.clean.accuracy,
                   report.worst_case_ata, report.per_sample_worst_case_ata, report.thresholds)


def policy_points(model, images, labels, attack, policies, policy_aware=True, batch_size=256, seed=0,
                  progress=True):
    """TA, cost and worst-case ATA of ``model`` under each policy: ``{label: ExitPolicy}`` -> [TradeoffPoint].

    The attacks that do not depend on the thresholds (each exit, average,
    max-average, as in :func:`robustness_report`, same seeds) are made once
    and scored under every policy; the attacks that follow the thresholds
    (routing-aware, and exit hijack where the policy leaves a side exit open)
    are made for each (``policy_aware=False`` leaves them out).
    """
    if not policies:
        raise InputError("pass at least one exit policy: {label: ExitPolicy(...)}")
    images = model.check_images(images)
    labels = np.asarray(labels).reshape(-1)
    objectives = default_objectives(model, None)
    per_policy = {label: [o for o in default_objectives(model, policy) if o not in objectives] if policy_aware else []
                  for label, policy in policies.items()}
    batches = -(-len(images) // batch_size)
    with tqdm(total=(len(objectives) + sum(map(len, per_policy.values()))) * batches, desc="attacks",
              disable=not progress, leave=False) as bar:
        driver = AttackDriver(model, next(iter(policies.values())), batch_size, seed)
        clean_logits = driver.exit_logits(images)
        attacked_logits = [driver.exit_logits(x)
                           for _, x in _objective_attacks(driver, attack, objectives, images, labels, bar)]
        points = []
        for label, policy in policies.items():
            driver.policy = policy  # the policy-aware attacks and the scores follow it; the compiled forward stays
            followed = [driver.exit_logits(_attack(driver, attack, objective, images, labels, bar))
                        for objective in per_policy[label]]
            scorer = _AdaptiveScorer(driver, labels)
            clean, _ = scorer.score("clean", clean_logits)
            attacked = [scorer.score("attacked", z) for z in attacked_logits + followed]
            points.append(TradeoffPoint(
                label, clean.mflops, clean.paper_mflops, clean.accuracy, min(r.accuracy for r, _ in attacked),
                float(np.logical_and.reduce([correct for _, correct in attacked]).mean()), policy.thresholds.tolist()))
    return points


def tradeoff(model, calibration_images, images, labels, attack, cost_targets, convention="honest", **kwargs):
    """The accuracy-versus-cost curve of ``model``: :func:`policy_points` of one policy per cost target.

    Each policy is ``ExitPolicy.for_cost(model, calibration_images, t, convention)``
    (held-out images, never test); ``cost_targets`` are MFLOPs of ``convention``, each at least the
    first exit's cost (e.g. ``numpy.linspace(costs[0], costs[-1], 8)`` with
    ``costs = flops.exit_costs(model)``). ``kwargs`` go to :func:`policy_points`.
    """
    policies = {f"target {target:.3f}": ExitPolicy.for_cost(model, calibration_images, target, convention)
                for target in cost_targets}
    return policy_points(model, images, labels, attack, policies, **kwargs)


def plot_tradeoff(curves, points=None, path=None, convention="honest", title=None):
    """TA and worst-case ATA against MFLOPs: a ``matplotlib`` figure with one panel each.

    Args:
        curves: ``{name: [TradeoffPoint, ...]}``, e.g. from :func:`tradeoff`, drawn as lines.
        points: ``[TradeoffPoint, ...]`` of single models (single-exit, pruned), drawn as marked points.
        path: also write the figure there (PNG, SVG or PDF by the suffix), atomically.
        convention: the MFLOPs on the x axis, ``"honest"`` or ``"paper"``.
    """
    from matplotlib.figure import Figure

    check_convention(convention)
    cost = (lambda p: p.mflops) if convention == "honest" else (lambda p: p.paper_mflops)
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots(1, 2)
    for axis, (metric, label) in zip(axes, [("accuracy", "TA (%)"), ("worst_case_ata", "worst-case ATA (%)")]):
        for name, curve in curves.items():
            curve = sorted(curve, key=cost)
            axis.plot([cost(p) for p in curve], [100 * getattr(p, metric) for p in curve], "o-", label=name,
                      markersize=3)
        for point in points or []:
            axis.plot(cost(point), 100 * getattr(point, metric), "s", markersize=7, label=point.label)
        axis.set_xlabel(f"MFLOPs ({convention})")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    if path is not None:
        path = Path(path)
        publish(path.parent, {path.name: lambda temporary: figure.savefig(temporary, format=path.suffix[1:] or None,
                                                                           dpi=120)})
    return figure


def evaluate_splits(model, splits, attacks, samples=None, batch_size=256, seed=0, objectives=None,
                    progress=True, autoattack=None):
    """Calibrate on the validation split if the model has no policy, then report on the first ``samples``
    test images (default: all)."""
    if model.exit_policy is None:
        model.exit_policy = ExitPolicy.calibrate(model, splits.x_val)
    count = len(splits.x_test) if samples is None else min(samples, len(splits.x_test))
    return robustness_report(model, splits.x_test[:count], splits.y_test[:count], attacks, objectives=objectives,
                             batch_size=batch_size, seed=seed, progress=progress, autoattack=autoattack)
