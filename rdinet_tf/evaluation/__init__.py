"""Evaluation: the robustness report (TA, ATA under each attack form, per-sample worst case, cost and the
slowdown attacks), the robust threshold calibration and the accuracy-cost trade-off (:mod:`.report`)."""

from rdinet_tf.evaluation.report import (LEGEND, AdaptiveResult, RobustnessReport, SlowdownResult, TradeoffPoint,
                                         calibrate_robust, default_objectives, describe_attack, evaluate_splits,
                                         plot_tradeoff, policy_points, robustness_report, savings_kept, tradeoff,
                                         transfer_counts, transfer_rates)

__all__ = ["AdaptiveResult", "LEGEND", "RobustnessReport", "SlowdownResult", "TradeoffPoint", "calibrate_robust",
           "default_objectives", "describe_attack", "evaluate_splits", "plot_tradeoff", "policy_points",
           "robustness_report", "savings_kept", "tradeoff", "transfer_counts", "transfer_rates"]
