"""The batched attack driver: attacks and the adaptive model over a numpy image set, in batches.

Used by the robustness report (:mod:`rdinet_tf.evaluation.report`) and the
AutoAttack-style suite (:mod:`rdinet_tf.attacks.autoattack`): both run
compiled attack functions batch by batch (batch i seeded ``seed + i``) and
score the adaptive model, which answers from the exit its policy routes each
input to.

Inside an :func:`attack_cache` block every described attack a driver makes is
kept on disk, so that an interrupted evaluation run again resumes where it stopped.
"""

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from rdinet_lite.errors import InputError

_caches = []  # the AttackCache of each enclosing attack_cache block, innermost last


class AttackCache:
    """Adversarial images in ``directory``, one ``attack-DIGEST.npy`` file per attack, DIGEST of all it depends on:
    the model's weights, the exit thresholds, the attack's description, seed, batch size, images and labels."""

    def __init__(self, directory):
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise InputError(f"the attack cache {directory} is a file: pass a directory (it is made if missing)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.loaded = self.made = 0

    def get(self, digest, make):
        """The attack saved under ``digest``, else ``make()``'s result, saved first."""
        path = self.directory / f"attack-{digest}.npy"
        if path.is_file():
            self.loaded += 1
            return np.load(path)
        adversarial = make()
        partial = self.directory / f"attack-{digest}.partial.npy"
        np.save(partial, adversarial)
        os.replace(partial, path)  # a file under its digest is always whole
        self.made += 1
        return adversarial

    def clear(self):
        """Delete the saved attacks, and the directory if nothing else is in it."""
        for path in self.directory.glob("attack-*.npy"):
            path.unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()


@contextlib.contextmanager
def attack_cache(directory):
    """Keep every described attack made in the block in ``directory`` (an :class:`AttackCache`, yielded) and load
    the ones already there: the same evaluation run again after an interruption makes only what is missing.

    Leaving the block normally deletes the attack files; an error leaves them for the next run. With
    ``directory`` None nothing is kept (None is yielded).
    """
    if directory is None:
        yield None
        return
    cache = AttackCache(directory)
    _caches.append(cache)
    try:
        yield cache
    finally:
        _caches.pop()
    cache.clear()


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
        self._weights_digest = None

    def map_batches(self, fn, *arrays):
        """``fn(i, *batch_i)`` over the batches of ``arrays`` (same length), results concatenated."""
        count = len(arrays[0])
        outputs = [fn(i, *(tf.constant(a[start:start + self.batch_size]) for a in arrays))
                   for i, start in enumerate(range(0, count, self.batch_size))]
        if not outputs:
            return None
        return tf.nest.map_structure(lambda *parts: np.concatenate([np.asarray(p) for p in parts]), *outputs)

    def attack(self, attack_fn, images, labels, key=None):
        """Adversarial images from ``attack_fn(images, labels, seed)``, batch by batch.

        ``key`` describes the attack completely (method with its settings, objective, loss, target); inside an
        :func:`attack_cache` block an attack with a key is loaded from the cache when it was made before.
        """
        def make():
            return self.map_batches(lambda i, x, y: attack_fn(x, y, tf.constant(self.seed + i)), images, labels)

        if key is None or not _caches or not len(images):
            return make()
        return _caches[-1].get(self._digest(key, images, labels), make)

    def _digest(self, key, images, labels):
        """A digest of everything an attack's result depends on."""
        if self._weights_digest is None:
            weights = hashlib.sha256()
            for weight in self.model.weights:
                weights.update(np.ascontiguousarray(weight.numpy()).tobytes())
            self._weights_digest = weights.hexdigest()
        digest = hashlib.sha256(json.dumps([self._weights_digest, self.policy.get_config(), key, self.seed,
                                            self.batch_size]).encode())
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(np.ascontiguousarray(labels).tobytes())
        return digest.hexdigest()

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
