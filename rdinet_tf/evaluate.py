"""Robustness report of the adaptive (early-exit) model: TA, ATA, cost and exits per attack.

``python -m rdinet_tf.evaluate --model run/model.keras --dataset mnist`` prints
the report and writes it as JSON. Thresholds come from the model's saved exit
policy (calibrated on held-out data by ``rdinet_tf.train``) or are calibrated
on the dataset's validation split, never on the test set being reported.

Besides accuracy, each attack method also runs as a slowdown attack (the
``"slowdown"`` objective: side exits pushed to uniform): its average cost
("adversarial MFLOPs") and the share of the clean savings it leaves,
``(cost_full - cost_attacked) / (cost_full - cost_clean)``, in both FLOPs
conventions. ``autoattack=AutoAttack(eps)`` adds the suite of
:mod:`rdinet_tf.autoattack` with its gradient-masking flags.
"""

import argparse
import dataclasses
import sys

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from rdinet_tf import attacks as attack_lib
from rdinet_tf import autoattack as autoattack_lib
from rdinet_tf import data, files, flops
from rdinet_tf.errors import InputError
from rdinet_tf.policy import ExitPolicy, exit_entropies, first_confident_exit


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


@dataclasses.dataclass(frozen=True)
class RobustnessReport:
    """TA, ATA per attack, worst cases and per-exit accuracies; see :func:`robustness_report`."""

    num_samples: int
    thresholds: list
    attack_methods: list
    clean: AdaptiveResult
    attacks: list  # AdaptiveResult per (method, objective)
    worst_case_ata: float  # lowest ATA over the attacks
    worst_case_attack: str
    per_sample_worst_case_ata: float  # a sample counts only if it survives every attack
    exit_clean_accuracy: list  # each exit alone, clean
    exit_adversarial_accuracy: dict  # method -> each exit alone under the attack on that exit
    slowdown: list = dataclasses.field(default_factory=list)  # SlowdownResult per method
    autoattack: autoattack_lib.AutoAttackResult = None

    def to_dict(self):
        return dataclasses.asdict(self)

    def table(self):
        """The report as a printable table."""
        lines = [f"{'inputs':<28}{'accuracy':>9}{'MFLOPs':>9}{'paper':>9}   exit shares (%)"]
        for result in [self.clean, *self.attacks]:
            shares = " ".join(f"{100 * s:.0f}" for s in result.exit_shares)
            lines.append(f"{result.name:<28}{result.accuracy:>9.2%}{result.mflops:>9.3f}"
                         f"{result.paper_mflops:>9.3f}   {shares}")
        lines.append(f"{'worst case (' + self.worst_case_attack + ')':<28}{self.worst_case_ata:>9.2%}")
        lines.append(f"{'worst case, per sample':<28}{self.per_sample_worst_case_ata:>9.2%}")
        if self.slowdown:
            lines.append("")
            lines.append(f"{'slowdown (cost attack)':<28}{'accuracy':>9}{'MFLOPs':>9}{'paper':>9}"
                         f"   savings kept (%, honest / paper)")
            for result in self.slowdown:
                kept = " / ".join("-" if k is None else f"{100 * k:.0f}"
                                  for k in (result.savings_kept, result.paper_savings_kept))
                lines.append(f"{result.name:<28}{result.accuracy:>9.2%}{result.mflops:>9.3f}"
                             f"{result.paper_mflops:>9.3f}   {kept}")
        if self.autoattack is not None:
            lines.append("")
            lines.append(self.autoattack.table())
        lines.append("")
        methods = list(self.exit_adversarial_accuracy)
        lines.append(f"{'exit alone':<12}{'clean':>9}" + "".join(f"{m:>14}" for m in methods))
        for k, clean in enumerate(self.exit_clean_accuracy):
            lines.append(f"exit_{k + 1:<7}{clean:>9.2%}" + "".join(
                f"{self.exit_adversarial_accuracy[m][k]:>14.2%}" for m in methods))
        lines.append(f"(MFLOPs: 10^6 conv+dense MACs incl. rejected heads; paper: 2^20 conv MACs; "
                     f"{self.num_samples} samples)")
        return "\n".join(lines)


def default_objectives(model, policy):
    """Every single exit, average, max-average, and routing-aware when there is a policy."""
    names = [f"exit_{k + 1}" for k in range(model.num_exits)] + ["average", "max_average"]
    return names + (["routing"] if policy is not None else [])


def robustness_report(model, images, labels, attacks, policy=None, objectives=None,
                      batch_size=256, seed=0, progress=True, slowdown=True, autoattack=None):
    """Evaluate the adaptive ``model`` (entropy early exit) against each attack.

    Args:
        model: a :class:`MultiExitModel`.
        images, labels: test set (float images in [0, 1], integer labels).
        attacks: attack methods, e.g. ``[PGD(0.3, 0.01, 40)]``; each is combined
            with every objective.
        policy: the exit policy (default: ``model.exit_policy``); it must come
            from held-out data.
        objectives: attack objectives (default: :func:`default_objectives`). When every
            single exit is among them, max-average is selected from their attacks
            instead of running its K attacks again (same seeds, same result).
        slowdown: also run each method as a slowdown attack (cost, savings kept).
        autoattack: an :class:`rdinet_tf.autoattack.AutoAttack` to add that suite (with
            ``objectives`` if given, else the suite's default objectives).
    """
    policy = policy or model.exit_policy
    if policy is None:
        raise InputError("the model has no exit policy: calibrate one on held-out data "
                         "(ExitPolicy.calibrate(model, x_val)) and pass policy=... or set model.exit_policy")
    if not attacks:
        raise InputError("pass at least one attack method, e.g. attacks=[PGD(eps, step_size, steps)]")
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels).reshape(-1)
    model.check_images(images)
    suite_objectives = objectives
    objectives = objectives or default_objectives(model, policy)
    for objective in objectives:
        attack_lib.check_objective(objective, model.num_exits, policy)
    costs = {c: flops.exit_costs(model, c, thresholds=policy.thresholds) for c in flops.CONVENTIONS}
    logits_fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    batches = [slice(i, i + batch_size) for i in range(0, len(images), batch_size)]

    def adaptive(name, all_logits):
        exits = first_confident_exit(exit_entropies(all_logits), policy.thresholds).numpy()
        stacked = np.stack(all_logits, axis=1)
        correct = stacked[np.arange(len(exits)), exits].argmax(-1) == labels
        shares = (np.bincount(exits, minlength=model.num_exits) / len(exits)).tolist()
        result = AdaptiveResult(name, float(correct.mean()), float(costs["honest"][exits].mean()),
                                float(costs["paper"][exits].mean()), shares)
        return result, correct

    def run_logits(batch_images):
        outputs = [logits_fn(tf.constant(batch_images[b])) for b in batches]
        return [np.concatenate([np.asarray(o[k]) for o in outputs]) for k in range(model.num_exits)]

    clean_logits = run_logits(images)
    clean, _ = adaptive("clean (TA)", clean_logits)
    results, survivors = [], np.ones(len(labels), dtype=bool)
    exit_adversarial = {}
    bar = tqdm(total=len(attacks) * (len(objectives) + int(slowdown)) * len(batches), desc="attacks",
               disable=not progress, leave=False)
    select_fn = tf.function(lambda candidates, y: attack_lib.select_max_average(model, candidates, y),
                            reduce_retracing=True)

    def run_attack(method, objective, exit_attacks=None):
        """Adversarial images of ``method`` x ``objective``; those of single exits go into ``exit_attacks``.

        Max-average is selected from the single-exit attacks already in
        ``exit_attacks`` (same seeds, so the same result as running it anew).
        """
        exit_index = attack_lib.check_objective(objective, model.num_exits, policy)
        reuse = objective == "max_average" and len(exit_attacks or {}) == model.num_exits
        attack_fn = None if reuse else attack_lib.attack_function(model, method, objective, policy)
        adversarial = np.empty_like(images)
        for i, b in enumerate(batches):
            if reuse:
                candidates = [tf.constant(exit_attacks[k][b]) for k in range(model.num_exits)]
                adversarial[b] = select_fn(candidates, tf.constant(labels[b]))
            else:
                adversarial[b] = attack_fn(tf.constant(images[b]), tf.constant(labels[b]),
                                           tf.constant(seed + i))
            bar.update()
        if exit_attacks is not None and exit_index is not None:
            exit_attacks[exit_index] = adversarial
        return adversarial

    for method in attacks:
        exit_adversarial[method.name] = [float("nan")] * model.num_exits
        exit_attacks = {} if "max_average" in objectives else None
        for objective in objectives:
            adversarial_logits = run_logits(run_attack(method, objective, exit_attacks))
            result, correct = adaptive(f"{method.name} {objective}", adversarial_logits)
            results.append(result)
            survivors &= correct
            exit_index = attack_lib.check_objective(objective, model.num_exits, policy)
            if exit_index is not None and objective.startswith("exit_"):
                exit_adversarial[method.name][exit_index] = float(
                    np.mean(adversarial_logits[exit_index].argmax(-1) == labels))
    slowdown_results = []
    for method in attacks if slowdown else []:
        result, _ = adaptive(f"{method.name} slowdown", run_logits(run_attack(method, "slowdown")))
        full, paper_full = float(costs["honest"][-1]), float(costs["paper"][-1])
        slowdown_results.append(SlowdownResult(
            **dataclasses.asdict(result), full_mflops=full, paper_full_mflops=paper_full,
            savings_kept=savings_kept(full, clean.mflops, result.mflops),
            paper_savings_kept=savings_kept(paper_full, clean.paper_mflops, result.paper_mflops)))
    bar.close()
    worst = min(results, key=lambda r: r.accuracy)
    return RobustnessReport(
        num_samples=len(labels),
        thresholds=policy.thresholds.tolist(),
        attack_methods=[dataclasses.asdict(m) for m in attacks],
        clean=clean,
        attacks=results,
        worst_case_ata=worst.accuracy,
        worst_case_attack=worst.name,
        per_sample_worst_case_ata=float(survivors.mean()),
        exit_clean_accuracy=[float(np.mean(z.argmax(-1) == labels)) for z in clean_logits],
        exit_adversarial_accuracy=exit_adversarial,
        slowdown=slowdown_results,
        autoattack=None if autoattack is None else autoattack_lib.evaluate(
            model, images, labels, autoattack, policy, suite_objectives, batch_size, seed),
    )


def attack_methods(names, eps, step_size, steps):
    """Attack methods by CLI name: pgd, fgsm, wrm, noise."""
    makers = {
        "pgd": lambda: attack_lib.PGD(eps, step_size, steps),
        "fgsm": lambda: attack_lib.fgsm(eps),
        "wrm": lambda: attack_lib.WRM(eps, steps),
        "noise": lambda: attack_lib.RandomNoise(eps),
    }
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise InputError(f"unknown attack {unknown[0]!r}; choose from {sorted(makers)}")
    return [makers[n]() for n in names]


def evaluate_splits(model, splits, attack_names, eps, step_size, steps, samples=None,
                    batch_size=256, seed=0, objectives=None, progress=True, autoattack=None):
    """Calibrate on the validation split if needed, then report on (a prefix of) the test split."""
    if model.exit_policy is None:
        model.exit_policy = ExitPolicy.calibrate(model, splits.x_val)
    count = len(splits.x_test) if samples is None else min(samples, len(splits.x_test))
    return robustness_report(model, splits.x_test[:count], splits.y_test[:count],
                             attack_methods(attack_names, eps, step_size, steps), objectives=objectives,
                             batch_size=batch_size, seed=seed, progress=progress, autoattack=autoattack)


def main(argv=None):
    from rdinet_tf.training import PRESETS

    parser = argparse.ArgumentParser(prog="python -m rdinet_tf.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a .keras file written by rdinet_tf.train")
    parser.add_argument("--dataset", required=True, choices=sorted(data.DATASETS))
    parser.add_argument("--data-dir", help="local data directory (else tfds or $RDINET_DATA_DIR)")
    parser.add_argument("--attacks", default="pgd", help="comma-separated: pgd,fgsm,wrm,noise")
    parser.add_argument("--eps", type=float, help="default: the model's preset (e.g. 0.3 MNIST, 8/255 CIFAR)")
    parser.add_argument("--step-size", type=float)
    parser.add_argument("--attack-steps", type=int)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="attack defaults from this model preset (default: guessed from the image shape)")
    parser.add_argument("--objectives", help="comma-separated attack objectives (default: every exit, "
                        "average, max_average, routing)")
    parser.add_argument("--samples", type=int, help="evaluate the first N test images (default: all)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--autoattack", action="store_true",
                        help="also run the AutoAttack-style suite (APGD-CE, APGD-DLR, APGD-T, Square)")
    parser.add_argument("--autoattack-steps", type=int, default=100, help="APGD iterations")
    parser.add_argument("--autoattack-queries", type=int, default=5000, help="Square iterations")
    parser.add_argument("--autoattack-targets", type=int, default=9, help="APGD-T target classes")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    try:
        model = files.load_model(args.model)
        splits = data.load(args.dataset, data_dir=args.data_dir)
        preset = PRESETS[args.preset or ("smallcnn" if model.image_shape[-1] == 1 else "resnet38")]
        eps = args.eps or preset.eps
        suite = (autoattack_lib.AutoAttack(eps, args.autoattack_steps, args.autoattack_queries,
                                           args.autoattack_targets) if args.autoattack else None)
        report = evaluate_splits(
            model, splits, args.attacks.split(","), eps,
            args.step_size or preset.step_size, args.attack_steps or preset.eval_attack_steps,
            args.samples, args.batch_size, objectives=args.objectives and args.objectives.split(","),
            autoattack=suite)
    except (InputError, OSError) as error:
        sys.exit(f"error: {error}")
    print(report.table())
    if args.out:
        files.write_json(args.out, report.to_dict())
        print(f"report written to {args.out}")


if __name__ == "__main__":
    main()
