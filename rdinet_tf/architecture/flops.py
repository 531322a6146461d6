"""Per-exit cost accounting, derived from the model graph.

Two conventions:

* ``"paper"``: convolution multiply-accumulates only, divided by 2**20; the
  cost of exit k is the backbone convs up to exit k plus exit k's OWN head
  (heads of earlier exits that ran and were rejected are not added). This
  reproduces the paper's "MFlops".
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

from rdinet_lite.accounting import check_convention, expected_cost, to_mflops
from rdinet_tf.architecture.graph import flat_layers, output_positions
from rdinet_lite.inputs import open_side_exits

SPARSE_NOTE = "(sparse: non-zero weights only)"
COUNTED_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


@dataclasses.dataclass(frozen=True)
class SegmentMacs:
    """Multiply-accumulates of one segment (a stage or a head)."""

    conv: int
    dense: int

    @property
    def total(self):
        return self.conv + self.dense

    def in_convention(self, convention):
        """This segment's MFLOPs in ``convention`` (the paper counts convs only)."""
        return float(to_mflops(self.conv if convention == "paper" else self.total, convention))


def kernel_weights(layer, sparse=False):
    """Weights of ``layer``'s kernel; ``sparse``: the non-zero ones only."""
    if sparse:
        return int(np.count_nonzero(keras.ops.convert_to_numpy(layer.kernel)))
    return int(np.prod(layer.kernel.shape))


def layer_macs(layer, sparse=False):
    """MACs of one conv or dense layer: kernel weights times output positions."""
    return kernel_weights(layer, sparse) * output_positions(layer)


def segment_macs_of(model, sparse=False):
    """Conv and dense MACs of a functional model (nested sub-models included)."""
    conv = dense = 0
    for layer in flat_layers(model):
        if isinstance(layer, keras.layers.Dense):
            dense += layer_macs(layer, sparse)
        elif isinstance(layer, COUNTED_TYPES):
            conv += layer_macs(layer, sparse)
    return SegmentMacs(conv, dense)


def segment_macs(model, sparse=False):
    """``(stage_macs, head_macs)``: one :class:`SegmentMacs` per stage and per head."""
    return ([segment_macs_of(s, sparse) for s in model.stages],
            [segment_macs_of(h, sparse) for h in model.heads])


def exit_costs(model, convention="honest", sparse=False, thresholds=None):
    """Cumulative cost of leaving at each exit, shape (K,), in MFLOPs of ``convention``.

    ``sparse``: count only non-zero weights (see the module doc).
    ``thresholds``: the exit policy's; a closed side exit (threshold 0) is never
    taken, so the honest cost leaves its head out (a single-exit baseline
    with all thresholds 0 costs its backbone alone).
    """
    check_convention(convention)
    stages, heads = segment_macs(model, sparse)
    if convention == "paper":
        backbone = np.cumsum([s.conv for s in stages])
        return to_mflops(backbone + np.array([h.conv for h in heads]), convention)
    computed = np.ones(len(heads), bool) if thresholds is None else np.append(open_side_exits(thresholds), True)
    return to_mflops(np.cumsum([s.total + h.total * used for s, h, used in zip(stages, heads, computed)]),
                     convention)


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
