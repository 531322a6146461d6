"""Keras callbacks the resume tests share: interrupt ``fit`` as a kill would, count the epochs a run trains."""

import keras


class StopAfter(keras.callbacks.Callback):
    """Interrupts ``fit`` at the end of epoch ``epoch`` (0-based), as a kill would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


class CountEpochs(keras.callbacks.Callback):
    """Records the 0-based epochs ``fit`` starts."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)
