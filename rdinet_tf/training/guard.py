"""The catastrophic-overfitting guard of single-step adversarial training, as a Keras callback.

Single-step training (FGSM with a random start, N-FGSM) can overfit
catastrophically: within an epoch the model learns to defeat its own one-step
attack and its robustness to multi-step PGD collapses towards 0 (Wong et al.,
ICLR 2020). :class:`CatastrophicOverfittingGuard` watches for that::

    guard = CatastrophicOverfittingGuard(x_val[:256], y_val[:256], PGD(8 / 255, 2 / 255, 10))
    model.fit(train, epochs=15, callbacks=[guard])

After each epoch it attacks every exit alone (objective ``exit_k``) on the same
held-out images and logs ``val_exit_k_pgd_accuracy`` and their mean
``val_pgd_accuracy``, weighted by the exits' training weights (so a single-exit
baseline is guarded on the exit it trains), in ``History`` and the progress bar.

**The rule.** Training has collapsed when the mean PGD accuracy falls below
``(1 - max_drop)`` times its best epoch's *and* at least ``min_drop`` below it
(defaults: to less than half the best, by 10 points or more: far beyond the
sampling noise of a few hundred images), or when the epoch's loss, metrics or
weights are not finite (the training diverged). The guard then stops training,
restores the best epoch's weights, and says so; a training that diverges
before any epoch was kept is left to fail. ``stopped_epoch`` and ``best_epoch``
(1-based, as Keras prints epochs; 0: never) tell where it acted.

With ``state_dir`` the guard keeps its state there (``guard.json`` and the best
epoch's weights), so a run killed and resumed (``BackupAndRestore``) guards as
the uninterrupted run would.
"""

import json
from pathlib import Path

import keras
import numpy as np

from rdinet_lite import files
from rdinet_tf import attacks
from rdinet_lite.errors import InputError
from rdinet_tf.training.model import divergence

GUARD_SAMPLES = 256  # held-out images attacked after each epoch
GUARD_STEPS = 10  # PGD steps of the guard's attack
STATE_FILE = "guard.json"
BEST_WEIGHTS_FILE = "guard_best_weights.npz"


def guard_attack(eps, steps=GUARD_STEPS):
    """The guard's default attack: :func:`rdinet_tf.attacks.attacks.scaled_pgd` of ``steps`` steps."""
    return attacks.scaled_pgd(eps, steps)


class CatastrophicOverfittingGuard(keras.callbacks.Callback):
    """Stops single-step adversarial training when its PGD accuracy collapses; see the module doc.

    Args:
        images, labels: the fixed held-out batch (never test data).
        attack: the attack method, e.g. ``PGD(eps, 2.5 * eps / 10, 10)``.
        max_drop: the relative fall from the best epoch that counts as a collapse.
        min_drop: the smallest absolute fall that counts (accuracy in [0, 1]).
        state_dir: a folder to keep the guard's state in across a resume (None: memory only).
        seed: seeds the attack's random starts (the same every epoch).
        batch_size: images attacked at once.
        verbose: 1 prints a line when the guard acts, 0 stays silent.
    """

    def __init__(self, images, labels, attack, max_drop=0.5, min_drop=0.1, state_dir=None, seed=0,
                 batch_size=256, verbose=1):
        super().__init__()
        images, labels = np.asarray(images, np.float32), np.asarray(labels).reshape(-1)
        if len(images) == 0 or len(images) != len(labels):
            raise InputError(f"the guard needs a non-empty held-out batch with one label per image; got "
                             f"{len(images)} images and {len(labels)} labels")
        if not (0 < max_drop <= 1 and 0 <= min_drop <= 1):
            raise InputError(f"the guard needs 0 < max_drop <= 1 and 0 <= min_drop <= 1; got max_drop={max_drop}, "
                             f"min_drop={min_drop}")
        self.images, self.labels, self.attack = images, labels, attack
        self.max_drop, self.min_drop = float(max_drop), float(min_drop)
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.seed, self.batch_size, self.verbose = int(seed), int(batch_size), verbose
        self.best, self.best_epoch, self.stopped_epoch = -1.0, 0, 0
        self._best_weights = None
        self._attacks = None

    @property
    def acted(self):
        """Whether the guard stopped training (and restored the best epoch's weights)."""
        return self.stopped_epoch > 0

    def report(self):
        """What the guard saw and did, for a run summary."""
        return {"rule": f"stop when the exit-weighted mean PGD accuracy < (1 - {self.max_drop:g}) x best and "
                        f"<= best - {self.min_drop:g}, or when the loss or weights are not finite; restore the best "
                        "epoch",
                "samples": len(self.images), "attack": self.attack.get_config(),
                "best_epoch": self.best_epoch, "best_pgd_accuracy": max(self.best, 0.0),
                "stopped_epoch": self.stopped_epoch, "restored_epoch": self.best_epoch if self.acted else None}

    def exit_accuracies(self):
        """PGD accuracy of each exit, attacked alone, on the guard's batch."""
        if self._attacks is None:
            self._attacks = [attacks.attack_function(self.model, self.attack, f"exit_{k + 1}")
                             for k in range(self.model.num_exits)]
        correct = np.zeros(self.model.num_exits)
        for start in range(0, len(self.images), self.batch_size):
            x, y = self.images[start:start + self.batch_size], self.labels[start:start + self.batch_size]
            for k, attack in enumerate(self._attacks):
                adversarial = attack(x, y, self.seed)
                logits = self.model.exit_logits(adversarial, [k])[0]
                correct[k] += np.sum(np.argmax(logits, axis=-1) == y)
        return correct / len(self.images)

    def _exit_weights(self):
        """The exits' training weights (all 1 for a model compiled without them): an exit trained with weight
        0, as a single-exit baseline's side exits, does not count."""
        weights = np.asarray(getattr(self.model, "exit_weights", None) or np.ones(self.model.num_exits), float)
        return weights if weights.sum() > 0 else np.ones(self.model.num_exits)

    def on_train_begin(self, logs=None):
        self.load_state()

    def on_epoch_end(self, epoch, logs=None):
        diverged = divergence(self.model, logs) is not None
        accuracies = self.exit_accuracies()
        value = float(np.average(accuracies, weights=self._exit_weights()))
        if logs is not None:
            logs.update({f"val_exit_{k + 1}_pgd_accuracy": float(a) for k, a in enumerate(accuracies)})
            logs["val_pgd_accuracy"] = value
        collapsed = value < (1 - self.max_drop) * self.best and value <= self.best - self.min_drop
        if not diverged and value > self.best:
            self.best, self.best_epoch = value, epoch + 1
            self._best_weights = self.model.get_weights()
            if self.state_dir is not None:
                files.publish(self.state_dir, {BEST_WEIGHTS_FILE: lambda path: np.savez(path, *self._best_weights)})
        elif self.best_epoch and (diverged or collapsed):
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            self.restore_best(self.model)
            if self.verbose:
                cause = ("the loss or the weights are not finite: training diverged" if diverged else
                         f"mean PGD accuracy of the exits fell to {value:.1%}: catastrophic overfitting")
                print(f"\nguard: at epoch {epoch + 1} {cause} (best PGD accuracy {self.best:.1%} at epoch "
                      f"{self.best_epoch}); training stopped and the weights of epoch {self.best_epoch} restored")
        self._save_state()

    def restore_best(self, model):
        """Set ``model``'s weights to the best epoch's."""
        if self._best_weights is None and self.state_dir is not None:
            with np.load(self.state_dir / BEST_WEIGHTS_FILE) as stored:
                self._best_weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        if self._best_weights is not None:
            model.set_weights(self._best_weights)

    def _save_state(self):
        if self.state_dir is not None:
            state = {"best": self.best, "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch}
            files.write_json(self.state_dir / STATE_FILE, state)

    def load_state(self):
        """Read the state an earlier, interrupted run kept in ``state_dir``; returns :attr:`acted`."""
        path = None if self.state_dir is None else self.state_dir / STATE_FILE
        if path is None or not path.is_file():
            return self.acted
        try:
            state = json.loads(path.read_text())
            self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
            self.stopped_epoch = int(state["stopped_epoch"])
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"{path} (the guard's state) is corrupt ({error}): pass --restart to train again") \
                from error
        return self.acted
