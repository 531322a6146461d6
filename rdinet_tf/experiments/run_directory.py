"""The output directory of a training run, made to survive a kill at any point.

Layout of ``--out`` while a run is under way, and what a rerun does with it:

* ``backup/``: Keras's ``BackupAndRestore`` state during ``fit`` (a rerun
  resumes from the last finished epoch), with the random generators' states
  that it does not save (dropout's), so that a resumed run is the run it
  continues;
* ``progress.json``: the training settings and every finished epoch's metrics and
  seconds, so the summary of a resumed run covers all its epochs;
* ``trained.keras``: the model once ``fit`` has finished (a rerun calibrates,
  evaluates and writes the outputs from it instead of training again);
* ``model.keras`` + ``summary.json``: the finished run, written together;
  the files above are then removed. A finished run is replaced only with
  ``--overwrite``; ``--restart`` discards an unfinished one.

A non-chief worker of a multi-worker run keeps the same state in
``.worker_<index>/`` and removes it when its training is done: only the chief
writes outputs.

One process at a time works in a run directory (a :class:`rdinet_lite.files.Lock`
held until :meth:`RunDirectory.close`). The backup is written atomically and
keeps the previous epoch's copy (``*.bkp``); a rerun resumes from that copy
when the latest one is damaged (a kill or a full disk while it was written).
A training whose loss or weights stop being finite is stopped before the
backup keeps the diverged epoch.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import h5py
import keras
import numpy as np

from rdinet_lite import files
from rdinet_tf.training import divergence, guard, nonfinite_weight
from rdinet_lite.errors import InputError

MODEL_FILE = "model.keras"
SUMMARY_FILE = "summary.json"
TRAINED_FILE = "trained.keras"
PROGRESS_FILE = "progress.json"
BACKUP_DIR = "backup"
WEIGHTS_FILE = "latest.weights.h5"  # BackupAndRestore's names
METADATA_FILE = "training_metadata.json"
PREVIOUS = ".bkp"
# The key of a config field's metadata that is False for a setting that does not change what is trained.
TRAINING = "training"


def training_settings(config):
    """The fields of the dataclass ``config`` that change what is trained (all but those whose metadata has
    ``TRAINING: False``), by name: a rerun resumes the run only when they are the same."""
    fields = sorted(dataclasses.fields(config), key=lambda field: field.name)
    return {field.name: getattr(config, field.name) for field in fields if field.metadata.get(TRAINING, True)}


class RunDirectory:
    """The state of a training run of ``config`` (a dataclass, see :func:`training_settings`) in ``out``; see the
    module doc."""

    def __init__(self, out, config, overwrite=False, restart=False, worker=None):
        files.check_output(out)
        self.root = Path(out)
        # A non-chief worker of a multi-worker run keeps its own resumable state in a private
        # folder (removed by finish_worker) and writes no outputs.
        self.out = self.root if worker is None else self.root / f".worker_{worker}"
        self.overwrite = overwrite
        self.training_args = training_settings(config)
        self._lock = files.Lock(self.out).acquire()  # before looking: nobody else changes it now
        try:
            finished = (self.out / MODEL_FILE).exists() or (self.out / SUMMARY_FILE).exists()
            if finished and not overwrite:
                raise InputError(f"{self.out} already holds a finished run ({MODEL_FILE}, {SUMMARY_FILE}); pass "
                                 "--overwrite to replace it or choose another --out")
            if overwrite or restart:
                self._discard_unfinished()
            self.epochs = self._resumable_progress()
            self._check_backup()
        except BaseException:
            self.close()
            raise

    def close(self):
        """Release the run directory (its lock); also when the run failed."""
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def backup(self):
        return self.out / BACKUP_DIR

    def trained_model(self):
        """The model saved when ``fit`` finished in an earlier run, or None."""
        path = self.out / TRAINED_FILE
        if not path.is_file():
            return None
        from rdinet_tf import models

        try:
            model = models.load(path)
        except InputError as error:
            raise InputError(f"the model of a finished fit cannot be used ({error}); delete {path}, or pass "
                             "--restart to train again") from error
        return model

    def save_trained(self, model):
        from rdinet_tf import models

        models.check_finite_weights(model, "the trained model", DIVERGED_FIX)
        files.publish(self.out, {TRAINED_FILE: model.save})
        shutil.rmtree(self.backup, ignore_errors=True)

    def callbacks(self):
        """The divergence check, ``BackupAndRestore`` and the callback that records each finished epoch."""
        return [_Divergence(), _RandomStates(self), _AtomicBackup(str(self.backup), double_checkpoint=True),
                _EpochRecorder(self)]

    def record_epoch(self, epoch, logs, seconds):
        self.epochs[str(epoch)] = {"logs": {k: float(v) for k, v in (logs or {}).items()}, "seconds": seconds}
        files.write_json(self.out / PROGRESS_FILE, {"args": self.training_args, "epochs": self.epochs})

    def history(self):
        """``(metric -> value per epoch, seconds of training)`` over every recorded epoch, in order."""
        ordered = [self.epochs[k] for k in sorted(self.epochs, key=int)]
        names = sorted({name for epoch in ordered for name in epoch["logs"]})
        return ({name: [epoch["logs"].get(name) for epoch in ordered] for name in names},
                sum(epoch["seconds"] for epoch in ordered))

    def finish(self, model, summary):
        """Write ``model.keras`` and ``summary.json`` together, then remove the run's working files."""
        files.publish(self.out, {MODEL_FILE: model.save, SUMMARY_FILE: files.json_writer(summary)},
                      replace=self.overwrite)
        self._discard_unfinished()

    def finish_worker(self):
        """End a non-chief worker's run: remove its private state (and ``out`` if that leaves it empty)."""
        shutil.rmtree(self.out, ignore_errors=True)
        self.close()
        with contextlib.suppress(OSError):
            self.root.rmdir()

    def resumed_epoch(self):
        """The epoch ``BackupAndRestore`` resumes ``fit`` from (0 for a new run): how much of the input stream
        the interrupted run consumed."""
        path = self.backup / METADATA_FILE
        if not (self.backup / WEIGHTS_FILE).is_file() or not path.is_file():
            return 0
        try:
            return _backup_epoch(path)
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"the training backup {path} is corrupt ({error}): pass --restart to train "
                             "again") from error

    def _discard_unfinished(self):
        shutil.rmtree(self.backup, ignore_errors=True)
        for name in (TRAINED_FILE, PROGRESS_FILE, guard.STATE_FILE, guard.BEST_WEIGHTS_FILE):
            (self.out / name).unlink(missing_ok=True)

    def _resumable_progress(self):
        path = self.out / PROGRESS_FILE
        if not path.is_file():
            return {}
        try:
            progress = json.loads(path.read_text())
            args, epochs = dict(progress["args"]), dict(progress["epochs"])
            for key, epoch in epochs.items():
                if not (key.isdigit() and isinstance(epoch, dict) and isinstance(epoch["logs"], dict)
                        and all(_number(v) for v in epoch["logs"].values()) and _number(epoch["seconds"])):
                    raise ValueError(f"epoch entry {key[:40]!r} is not an epoch index with numeric logs and seconds")
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise InputError(f"{path} is corrupt ({error}): pass --restart to train again") from error
        current = json.loads(json.dumps(self.training_args))
        # An option added since the run started counts as unchanged at its default (None).
        changed = sorted(k for k in set(args) | set(current) if args.get(k) != current.get(k))
        if changed:
            raise InputError(f"{self.out} holds an unfinished run with other arguments ({', '.join(changed)}); "
                             "rerun with the same arguments to resume it, pass --restart to discard it, or "
                             "choose another --out")
        return epochs

    def _check_backup(self):
        """Resume from an intact backup: the latest epoch's, else the previous one's (``*.bkp``, which then
        becomes the latest, as Keras's own fallback would do, so :meth:`resumed_epoch` is the epoch resumed)."""
        latest = (self.backup / WEIGHTS_FILE, self.backup / METADATA_FILE)
        previous = tuple(path.with_name(path.name + PREVIOUS) for path in latest)
        if not latest[0].exists() and not latest[1].exists() and not previous[0].exists():
            return
        problem = _backup_problem(*latest)
        if problem is None:
            return
        if _backup_problem(*previous) is None:
            for kept, damaged in zip(previous, latest):
                files.publish(self.backup, {damaged.name: lambda path, kept=kept: shutil.copyfile(kept, path)})
            return
        raise InputError(f"the training backup in {self.backup} is corrupt ({problem}) and has no intact previous "
                         "copy: pass --restart to train again")


DIVERGED_FIX = ("training diverged; lower --lr, check --exit-weights, and rerun with --restart")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _backup_epoch(path, weights=None):
    metadata = json.loads(Path(path).read_text())
    epoch = metadata["epoch"]
    if weights is not None and metadata.get("weights_sha256", _sha256(weights)) != _sha256(weights):
        raise ValueError(f"{Path(weights).name} is not the weights {Path(path).name} describes (a write was cut)")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ValueError(f"epoch {epoch!r} is not a non-negative integer")
    return epoch


def _backup_problem(weights, metadata):
    """Why the backup pair ``weights``, ``metadata`` cannot be resumed from (None if it can)."""
    try:
        with h5py.File(weights, "r") as stored:
            datasets = []
            stored.visititems(lambda name, item: datasets.append(item) if isinstance(item, h5py.Dataset) else None)
            for dataset in datasets:
                dataset[()]
        _backup_epoch(metadata, weights)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        return f"{type(error).__name__}: {error}"
    return None


class _Divergence(keras.callbacks.Callback):
    """Stops ``fit`` with one clear error at the first epoch whose loss, metrics or weights are not finite,
    unless a callback before it (the catastrophic-overfitting guard) has already stopped training and restored
    finite weights: the run then ends with those.

    It runs before the backup at every epoch end, so the backup keeps the last finite epoch.
    """

    def on_epoch_end(self, epoch, logs=None):
        problem = divergence(self.model, logs)
        if problem and not (self.model.stop_training and nonfinite_weight(self.model) is None):
            raise InputError(f"epoch {epoch + 1}: {problem} ({DIVERGED_FIX})")


class _AtomicBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose files are replaced atomically: a kill or a full disk while it writes leaves the
    previous backup as it was (Keras writes ``latest.weights.h5`` in place)."""

    def _save_model(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        latest = (backup / WEIGHTS_FILE, backup / METADATA_FILE)
        staged = [files._temporary_beside(path) for path in latest]
        try:
            self.model.save_weights(str(staged[0]), overwrite=True)
            metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                        "weights_sha256": _sha256(staged[0])}
            files.json_writer(metadata)(staged[1])
            # The new pair is complete before the old one becomes the previous copy.
            if self.double_checkpoint and all(path.is_file() for path in latest):
                for path in latest:
                    link = files._temporary_beside(path.with_name(path.name + PREVIOUS))
                    link.unlink()
                    os.link(path, link)
                    os.replace(link, path.with_name(path.name + PREVIOUS))
            for temporary, path in zip(staged, latest):
                os.replace(temporary, path)
        finally:
            for temporary in staged:
                temporary.unlink(missing_ok=True)


class _RandomStates(keras.callbacks.Callback):
    """Keeps the model's variables that ``save_weights`` leaves out (the ``SeedGenerator`` states of dropout)
    beside the backup, one file per finished epoch, and restores those of the epoch a rerun resumes from.

    It runs before ``BackupAndRestore`` at every epoch end, so the file of any epoch the backup holds exists.
    """

    def __init__(self, run_directory):
        super().__init__()
        self.run_directory = run_directory

    def _states(self):
        weights = {id(w) for w in self.model.weights}
        return [v for v in self.model.variables if id(v) not in weights]

    def _path(self, epoch):
        return self.run_directory.backup / f"random_states.{epoch}.npz"

    def on_train_begin(self, logs=None):
        epoch = self.run_directory.resumed_epoch()
        if epoch == 0 or not self._states():
            return
        try:
            with np.load(self._path(epoch)) as stored:
                for i, variable in enumerate(self._states()):
                    variable.assign(stored[f"state_{i}"])
        except (OSError, KeyError, ValueError) as error:
            raise InputError(f"the training backup in {self.run_directory.backup} lacks the random states of epoch "
                             f"{epoch} ({error}): pass --restart to train again") from error

    def on_epoch_end(self, epoch, logs=None):
        states = {f"state_{i}": np.asarray(v) for i, v in enumerate(self._states())}
        files.publish(self.run_directory.backup, {self._path(epoch + 1).name: lambda path: np.savez(path, **states)})
        self._path(epoch - 1).unlink(missing_ok=True)  # the backup keeps two epochs


class _EpochRecorder(keras.callbacks.Callback):
    """Records each finished epoch's metrics and seconds in the run directory."""

    def __init__(self, run_directory):
        super().__init__()
        self.run_directory = run_directory

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.run_directory.record_epoch(epoch, logs, round(time.time() - self._started, 2))
