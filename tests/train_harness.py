"""Run ``rdinet-train`` with dropout off and dump the trained weights: ``python train_harness.py DUMP.npz ARGS...``.

Dropout draws its masks per replica, so only without it does a distributed
run train on exactly what a single-process run on the same global batches
trains on; the dump lets a test compare workers that write no outputs. With
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
        for layer in flat_layers(self.model):
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0

    def on_epoch_end(self, epoch, logs=None):  # after the run directory's callbacks saved the epoch
        if str(epoch) == os.environ.get("HARNESS_KILL_AFTER_EPOCH"):
            os._exit(17)

    def on_train_end(self, logs=None):
        np.savez(self.path, *[np.asarray(w) for w in self.model.get_weights()])


if __name__ == "__main__":
    train.run(train.parse_args(sys.argv[2:]), callbacks=[DumpWithoutDropout(sys.argv[1])])
