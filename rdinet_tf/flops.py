"""Per-exit cost accounting, derived from the model graph.

Two conventions:

* ``"paper"``: convolution multiply-accumulates only, divided by 2**20; the
  cost of exit k is the backbone convs up to exit k plus exit k's OWN head
  (heads of earlier exits that ran and were rejected are not added). This
  reproduces the paper's "MFlops" (spec section 3).
* ``"honest"`` (default): convolution AND dense MACs in units of 10**6; the
  cost of exit k adds every head evaluated on the way, since an input that
  leaves at exit k has had heads 1..k computed.

``sparse=True`` counts only the non-zero kernel weights of each conv and dense
layer (a 50%-sparse conv costs half): the cost of a pruned model on hardware
that skips zeros. Default: every weight counts.
"""

import dataclasses

import keras
import numpy as np

from rdinet_tf.errors import InputError

CONVENTIONS = ("honest", "paper")
SPARSE_NOTE = "(sparse: non-zero weights only)"


@dataclasses.dataclass(frozen=True)
class SegmentMacs:
    """Multiply-accumulates of one segment (a stage or a head)."""

    conv: int
    dense: int

    @property
    def total(self):
        return self.conv + self.dense


def layer_macs(model, sparse=False):
    """Conv and dense MACs of a functional model, walking nested sub-models.

    ``sparse``: count only non-zero kernel weights (``np.count_nonzero(kernel)``).
    """
    conv = dense = 0
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            op, out = node.operation, node.outputs[0]
            if isinstance(op, keras.Model):
                inner = layer_macs(op, sparse)
                conv, dense = conv + inner.conv, dense + inner.dense
            elif isinstance(op, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
                conv += _kernel_weights(op, sparse) * _spatial(out)
            elif isinstance(op, keras.layers.Dense):
                dense += _kernel_weights(op, sparse) * int(np.prod(out.shape[1:-1]))
    return SegmentMacs(conv, dense)


def _kernel_weights(layer, sparse):
    if sparse:
        return int(np.count_nonzero(keras.ops.convert_to_numpy(layer.kernel)))
    return int(np.prod(layer.kernel.shape))


def _spatial(tensor):
    return int(np.prod(tensor.shape[1:-1]))


def segment_macs(model, sparse=False):
    """``(stage_macs, head_macs)``: one :class:`SegmentMacs` per stage and per head."""
    return ([layer_macs(s, sparse) for s in model.stages],
            [layer_macs(h, sparse) for h in model.heads])


def exit_costs(model, convention="honest", sparse=False, thresholds=None):
    """Cumulative cost of leaving at each exit, shape (K,), in MFLOPs of ``convention``.

    ``sparse``: count only non-zero weights (see the module doc).
    ``thresholds``: the exit policy's; a side exit with threshold 0 is never
    taken, so the honest cost leaves its head out (a single-exit baseline
    with all thresholds 0 costs its backbone alone).
    """
    check_convention(convention)
    stages, heads = segment_macs(model, sparse)
    if convention == "paper":
        backbone = np.cumsum([s.conv for s in stages])
        return (backbone + np.array([h.conv for h in heads])) / 2.0**20
    computed = np.ones(len(heads), bool) if thresholds is None else np.append(np.asarray(thresholds) > 0, True)
    return np.cumsum([s.total + h.total * used for s, h, used in zip(stages, heads, computed)]) / 1e6


def expected_cost(costs, exit_distribution):
    """Average cost for an exit distribution (counts or shares per exit)."""
    distribution = np.asarray(exit_distribution, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    if distribution.shape != costs.shape or (distribution < 0).any() or distribution.sum() <= 0:
        raise InputError(
            f"an exit distribution needs {costs.shape[0]} non-negative counts or shares "
            f"with a positive sum; got {exit_distribution!r}"
        )
    return float(distribution @ costs / distribution.sum())


def check_convention(convention):
    if convention not in CONVENTIONS:
        raise InputError(f"unknown FLOPs convention {convention!r}; choose one of {CONVENTIONS}")


def cost_table(model, exit_shares=None, sparse=False):
    """A printable table of per-exit cost in both conventions (and the exit shares if given)."""
    paper, honest = exit_costs(model, "paper", sparse), exit_costs(model, "honest", sparse)
    header = f"{'exit':<8}{'paper MFLOPs (2^20 conv MACs)':>32}{'MFLOPs (10^6 MACs, all)':>26}"
    rows = [header + ("" if exit_shares is None else f"{'share':>9}")]
    for k in range(model.num_exits):
        row = f"exit_{k + 1:<3}{paper[k]:>32.3f}{honest[k]:>26.3f}"
        rows.append(row + ("" if exit_shares is None else f"{exit_shares[k]:>9.1%}"))
    if exit_shares is not None:
        rows.append(f"{'average':<8}{expected_cost(paper, exit_shares):>32.3f}"
                    f"{expected_cost(honest, exit_shares):>26.3f}")
    if sparse:
        rows.append(SPARSE_NOTE)
    return "\n".join(rows)
