"""The batched attack driver: attacks and the adaptive model over a numpy image set, in batches.

Used by the robustness report (:mod:`rdinet_tf.evaluation.report`) and the
AutoAttack-style suite (:mod:`rdinet_tf.attacks.autoattack`): both run
compiled attack functions batch by batch (batch i seeded ``seed + i``) and
score the adaptive model, which answers from the exit its policy routes each
input to.
"""

import numpy as np
import tensorflow as tf

from rdinet_lite.errors import InputError


class AttackDriver:
    """Batched attacks against ``model`` answering through ``policy``.

    Args:
        model: a multi-exit model (``model(x)`` gives every exit's logits).
        policy: the exit policy routing each input (e.g. ``model.exit_policy``).
        batch_size: images per batch.
        seed: batch i of an attack is seeded ``seed + i``.
    """

    def __init__(self, model, policy, batch_size=256, seed=0):
        if policy is None:
            raise InputError("attacks on the adaptive model need an exit policy: calibrate one on held-out "
                             "data (ExitPolicy.calibrate(model, x_val)) and pass policy=... or set "
                             "model.exit_policy")
        if batch_size < 1:
            raise InputError(f"batch_size must be 1 or more; got {batch_size}")
        self.model, self.policy, self.batch_size, self.seed = model, policy, int(batch_size), int(seed)
        self._logits = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def map_batches(self, fn, *arrays):
        """``fn(i, *batch_i)`` over the batches of ``arrays`` (same length), results concatenated."""
        count = len(arrays[0])
        outputs = [fn(i, *(tf.constant(a[start:start + self.batch_size]) for a in arrays))
                   for i, start in enumerate(range(0, count, self.batch_size))]
        if not outputs:
            return None
        return tf.nest.map_structure(lambda *parts: np.concatenate([np.asarray(p) for p in parts]), *outputs)

    def attack(self, attack_fn, images, labels):
        """Adversarial images from ``attack_fn(images, labels, seed)``, batch by batch."""
        return self.map_batches(lambda i, x, y: attack_fn(x, y, tf.constant(self.seed + i)), images, labels)

    def exit_logits(self, images):
        """Every exit's logits: a list of K arrays (N, C)."""
        return list(self.map_batches(lambda _, x: tuple(self._logits(x)), images))

    def adaptive(self, exit_logits):
        """``(predictions, exits)`` of the adaptive model from every exit's logits."""
        routed, exits = self.policy.route(exit_logits)
        return np.asarray(routed).argmax(-1), np.asarray(exits)

    def still_correct(self, images, labels):
        """Whether the adaptive model classifies each of ``images`` correctly, (N,) bool."""
        if len(images) == 0:
            return np.zeros(0, bool)
        return self.adaptive(self.exit_logits(images))[0] == np.asarray(labels).reshape(-1)
