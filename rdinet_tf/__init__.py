"""rdinet_tf: robust dynamic inference networks (RDI-Nets) in TensorFlow/Keras."""

# Importing the models registers MultiExitModel with Keras, so that
# ``keras.models.load_model("model.keras")`` works after ``import rdinet_tf``.
from rdinet_tf import models  # noqa: F401

__version__ = "0.1.0"
