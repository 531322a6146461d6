"""Attacks on multi-exit models: attack methods x exit objectives (:mod:`.attacks`), the AutoAttack-style
suite (:mod:`.autoattack`) and the batched, BatchNorm-folded driver that runs them (:mod:`.driver`; its
``attack_cache`` keeps the attacks on disk so that an interrupted evaluation resumes).

``attacks.generate(model, images, labels, attacks.PGD(eps, step, steps), objective="max_average")`` makes the
adversarial batch; the objectives are in ``OBJECTIVES`` (each exit, ``average``, ``max_average`` and the
policy-aware ``routing``, ``exit_hijack``, ``slowdown``).
"""

from rdinet_tf.attacks.attacks import (LOSS_SCALE, NFGSM, OBJECTIVES, PGD, POLICY_OBJECTIVES, SIDE_EXIT_OBJECTIVES,
                                       THRESHOLD_MARGIN, WRM, AttackMethod, RandomNoise, attack_function,
                                       check_objective, cross_entropy, exit_hijack_loss, fast_fgsm, fgsm, generate,
                                       iterate, loss_and_gradient, objective_loss, project_linf, scaled_pgd,
                                       select_max_average, select_routed, side_exit_entropy, threshold_slowdown_loss,
                                       uniform_noise, universal_slowdown)
from rdinet_tf.attacks.autoattack import APGD, AutoAttack, AutoAttackResult, Square
from rdinet_tf.attacks.driver import AttackCache, AttackDriver, attack_cache

__all__ = ["APGD", "AttackCache", "AttackDriver", "AttackMethod", "AutoAttack", "AutoAttackResult", "LOSS_SCALE",
           "NFGSM", "OBJECTIVES", "PGD", "POLICY_OBJECTIVES", "RandomNoise", "SIDE_EXIT_OBJECTIVES", "Square",
           "THRESHOLD_MARGIN", "WRM", "attack_cache", "attack_function", "check_objective", "cross_entropy",
           "exit_hijack_loss", "fast_fgsm", "fgsm", "generate", "iterate", "loss_and_gradient", "objective_loss",
           "project_linf", "scaled_pgd", "select_max_average", "select_routed", "side_exit_entropy",
           "threshold_slowdown_loss", "uniform_noise", "universal_slowdown"]
