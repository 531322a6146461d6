"""Experiments: a training run as a resumable run directory (:mod:`.run_directory`)."""
