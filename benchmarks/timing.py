"""Timing for the benchmarks: a warm-up, then the median of repeated runs.

Every timed figure in the benchmarks is a median after one untimed warm-up (the
first call traces and compiles): :func:`median_seconds` for one call,
:func:`interleaved_seconds` for several calls taking turns (so that a change in
the machine's load touches them alike), :func:`fit_step_seconds` for the
training steps inside one ``model.fit`` (each batch distributed as ``fit``
distributes it over the replicas of the model's strategy).
"""

import statistics
import time

import keras


def median_seconds(call, repeats):
    """Median seconds of ``call(i)`` for i = 1..repeats, after one warm-up ``call(0)``."""
    call(0)
    times = []
    for i in range(1, repeats + 1):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved_seconds(calls, repeats):
    """``{label: median seconds}`` of the ``calls`` (no arguments), one warm-up each, then in turn ``repeats``
    times."""
    for call in calls.values():
        call()
    times = {label: [] for label in calls}
    for _ in range(repeats):
        for label, call in calls.items():
            started = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - started)
    return {label: statistics.median(t) for label, t in times.items()}


class _StepTimes(keras.callbacks.Callback):
    """Seconds of each training batch of a ``fit``."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def fit_step_seconds(model, dataset, steps):
    """Median seconds of ``steps`` training steps of ``model.fit`` on ``dataset`` (repeated), after one warm-up
    step."""
    timer = _StepTimes()
    model.fit(dataset.repeat(), steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[timer])
    return statistics.median(timer.seconds[1:])
