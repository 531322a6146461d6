"""The exit policy: softmax entropy per exit, the first exit below its threshold, and the calibrations that
choose the thresholds (:mod:`.policy`)."""

from rdinet_tf.exits.policy import (ENTROPY_EPS, MIN_THRESHOLD, ExitOutcomes, ExitPolicy, PolicyResult,
                                    TrainingThresholds, below_bounds, confident, early_exit_function, entropy,
                                    exit_entropies, first_confident_exit, first_exit_below, predict_exit_logits,
                                    robust_thresholds, routed_logits, thresholds_for_counts,
                                    thresholds_for_fraction)

__all__ = ["ENTROPY_EPS", "MIN_THRESHOLD", "ExitOutcomes", "ExitPolicy", "PolicyResult", "TrainingThresholds",
           "below_bounds", "confident", "early_exit_function", "entropy", "exit_entropies", "first_confident_exit",
           "first_exit_below", "predict_exit_logits", "robust_thresholds", "routed_logits", "thresholds_for_counts",
           "thresholds_for_fraction"]
