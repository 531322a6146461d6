"""rdinet_tf: robust dynamic inference networks (RDI-Nets) in TensorFlow/Keras.

The package follows the data flow; each layer imports only those above it:

1. ``errors``, ``inputs``, ``accounting``, ``files``: numpy-only foundations.
2. ``data``: datasets and ``tf.data`` pipelines.
3. ``architecture``: multi-exit networks (stages, heads, ``exit_logits``).
4. ``flops``: per-exit cost from the model graph.
5. ``policy``: entropy, routing, threshold calibration.
6. ``adversarial``: attacks x exit objectives, the AutoAttack-style suite, the batched driver.
7. ``training``: ``MultiExitModel`` and its adversarial ``train_step``; presets.
8. ``models``: the trainable reference models (``build``), ``attach_exits``, ``load``.
9. ``evaluate``: the robustness report.
10. ``pruning``: the TF-MOT pruned baseline; ``import_torch``: the authors' checkpoints.
11. ``export``: TFLite bundles; ``runtime`` and ``bench_kit``: the device side
    (numpy + ai-edge-litert only, no TensorFlow or Keras).
12. ``cli``: every command line.
"""

import importlib.util

__version__ = "0.1.0"

# With Keras and TensorFlow installed, register the model, policy and attack classes so that
# ``keras.models.load_model("model.keras")`` works after ``import rdinet_tf``.
# On a device with only numpy and ai-edge-litert this is skipped, and the runtime imports alone.
if importlib.util.find_spec("keras") is not None and importlib.util.find_spec("tensorflow") is not None:
    from rdinet_tf import models  # noqa: F401
