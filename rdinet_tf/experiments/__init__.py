"""Experiments from one config each: a training run (:class:`RunConfig`, :func:`run`; :mod:`.pipeline`) in a
resumable run directory (:mod:`.run_directory`), the pruned baseline (:class:`PruneConfig`, :func:`prune`;
:mod:`.baseline`), and the settings the command lines give by name (:mod:`.settings`)."""

from rdinet_tf.experiments.baseline import PruneConfig, prune
from rdinet_tf.experiments.pipeline import RunConfig, run

__all__ = ["PruneConfig", "RunConfig", "prune", "run"]
