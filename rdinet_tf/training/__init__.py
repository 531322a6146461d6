"""Adversarial training of multi-exit models.

:class:`MultiExitModel` (:mod:`.model`) with its adversarial ``train_step`` and the loss terms of
:mod:`.losses`; the training recipes and their optimizers (:mod:`.recipes`); mixed precision
(:mod:`.precision`); the callbacks that watch a run (:mod:`.guard`); exit-diversity distillation
(:mod:`.distillation`); and where the replicas run (:mod:`.placement`, ``tf.distribute``).
"""

from rdinet_tf.catalog import DEFENSES, POLICY_DEFENSES, PRECISIONS, RECIPES
from rdinet_tf.training.distillation import NeoKD
from rdinet_tf.training.guard import GUARD_SAMPLES, CatastrophicOverfittingGuard, guard_attack
from rdinet_tf.training.losses import abstention_loss, check_exit_weights, rdi_loss, weighted_cross_entropy
from rdinet_tf.training.model import (WORST_CASE_OBJECTIVES, FollowThresholds, MultiExitModel, divergence,
                                      nonfinite_weight)
from rdinet_tf.training.precision import precision_scope, set_precision
from rdinet_tf.training.recipes import (FastRecipe, OneCycle, PaperRecipe, ReferenceSGD, learning_rate_schedule,
                                        paper_optimizer)

__all__ = ["CatastrophicOverfittingGuard", "DEFENSES", "FastRecipe", "FollowThresholds", "GUARD_SAMPLES",
           "MultiExitModel", "NeoKD", "OneCycle", "POLICY_DEFENSES", "PRECISIONS", "PaperRecipe", "RECIPES",
           "ReferenceSGD", "WORST_CASE_OBJECTIVES", "abstention_loss", "check_exit_weights", "divergence",
           "guard_attack", "learning_rate_schedule", "nonfinite_weight", "paper_optimizer", "precision_scope",
           "rdi_loss", "set_precision", "weighted_cross_entropy"]
