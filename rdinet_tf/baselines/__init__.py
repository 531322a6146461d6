"""Baselines an RDI-Net is compared with: the single-exit network pruned to the same cost with TF Model
Optimization (:mod:`.pruning`; needs the ``pruning`` extra, imported on first use)."""
