"""rdinet_tf: robust dynamic inference networks (RDI-Nets) in TensorFlow/Keras."""

__version__ = "0.1.0"
