"""Early exit computed in numpy from the rule's definition, independently of the library's routing code.

For each sample, exit k's softmax p_k and entropy H_k = -sum p_k log(p_k + 1e-5)
(float64); the sample leaves at the first side exit k with T_k > 0 and
H_k < T_k, else at the last exit. Used as the reference that the library's
policy, its TFLite runner and its report are compared with.
"""

import numpy as np

ENTROPY_EPS = 1e-5


def softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def entropies(exit_logits):
    """(N, K) entropies of a list of K (N, C) logits."""
    return np.stack([-(p * np.log(p + ENTROPY_EPS)).sum(-1) for p in map(softmax, exit_logits)], axis=1)


def early_exit(exit_logits, thresholds):
    """``(exits, predictions, probabilities of the exit taken, entropies)`` of the rule, per sample."""
    values = entropies(exit_logits)
    count, num_exits = values.shape
    exits = np.full(count, num_exits - 1)
    for i in range(count):
        for k, threshold in enumerate(thresholds):
            if threshold > 0 and values[i, k] < threshold:
                exits[i] = k
                break
    probabilities = np.stack([softmax(exit_logits[k][i]) for i, k in enumerate(exits)])
    return exits, probabilities.argmax(-1), probabilities, values


def keras_early_exit(model, images, thresholds=None):
    """:func:`early_exit` of the Keras ``model``'s logits (``model.predict``), at its policy's thresholds."""
    logits = [np.asarray(z) for z in model.predict(images, verbose=0)]
    thresholds = model.exit_policy.thresholds if thresholds is None else thresholds
    return early_exit(logits, np.asarray(thresholds, np.float64))
