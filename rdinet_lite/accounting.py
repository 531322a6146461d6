"""Exit shares, cost units and expected costs: numpy-only arithmetic.

Shared by the Keras side (cost accounting, exit policy, evaluation, export)
and the device side (runner, latency kit), which imports no TensorFlow.
"""

import numpy as np

from rdinet_lite.errors import InputError

# MFLOPs conventions: the divisor of multiply-accumulates (see rdinet_tf.architecture.flops).
COST_UNITS = {"honest": 1e6, "paper": 2.0**20}
CONVENTIONS = tuple(COST_UNITS)


def check_convention(convention):
    if convention not in COST_UNITS:
        raise InputError(f"unknown FLOPs convention {convention!r}; choose one of {CONVENTIONS}")


def to_mflops(macs, convention):
    """Multiply-accumulates (scalar or array) in MFLOPs of ``convention``."""
    check_convention(convention)
    return np.asarray(macs, np.float64) / COST_UNITS[convention]


def exit_shares(exits, num_exits):
    """Fraction of samples leaving at each exit, shape (K,), from 0-based exit indices."""
    exits = np.asarray(exits, np.int64).reshape(-1)
    return np.bincount(exits, minlength=num_exits) / max(exits.size, 1)


def expected_cost(costs, exit_distribution):
    """Average of per-exit ``costs`` (MFLOPs, or cumulative latencies) under an exit distribution.

    ``exit_distribution``: one non-negative count or share per exit.
    """
    distribution = np.asarray(exit_distribution, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim != 1 or distribution.shape != costs.shape or (distribution < 0).any() \
            or distribution.sum() <= 0:
        raise InputError(
            f"an exit distribution needs {costs.shape[0] if costs.ndim == 1 else '?'} non-negative "
            f"counts or shares (one per exit) with a positive sum; got {np.atleast_1d(distribution).tolist()}"
        )
    return float(distribution @ costs / distribution.sum())
