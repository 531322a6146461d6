"""Run ``rdinet-train`` with dropout off and dump the trained state: ``python train_harness.py DUMP.npz ARGS...``.

Dropout draws its masks per replica, so only without it does a distributed
run train on exactly what a single-process run on the same global batches
trains on (``HARNESS_KEEP_DROPOUT=1`` keeps it); the dump (the weights as
``weight_<i>``, the optimizer's variables as ``optimizer_<i>``) lets a test
compare workers that write no outputs. With
``HARNESS_KILL_AFTER_EPOCH=N`` the process dies (exit code 17, no cleanup)
once epoch N is finished and backed up, as a killed run would.
"""

import os
import sys

import keras
import numpy as np

from rdinet_tf.architecture.graph import flat_layers
from rdinet_tf.cli import train


class DumpWithoutDropout(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None):  # before the first step traces the model
        if os.environ.get("HARNESS_KEEP_DROPOUT"):
            return
        for layer in flat_layers(self.model):
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0

    def on_epoch_end(self, epoch, logs=None):  # after the run directory's callbacks saved the epoch
        if str(epoch) == os.environ.get("HARNESS_KILL_AFTER_EPOCH"):
            os._exit(17)

    def on_train_end(self, logs=None):
        state = {f"weight_{i}": np.asarray(w) for i, w in enumerate(self.model.get_weights())}
        state.update({f"optimizer_{i}": np.asarray(v) for i, v in enumerate(self.model.optimizer.variables)})
        np.savez(self.path, **state)


if __name__ == "__main__":
    train.run(train.parse_args(sys.argv[2:]), callbacks=[DumpWithoutDropout(sys.argv[1])])
