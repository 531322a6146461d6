"""Experiments: a training run from one config (:class:`RunConfig`, :func:`run`; :mod:`.pipeline`) in a resumable
run directory (:mod:`.run_directory`), and the settings the command lines give by name (:mod:`.settings`)."""

from rdinet_tf.experiments.pipeline import RunConfig, run

__all__ = ["RunConfig", "run"]
