#!/usr/bin/env python3
"""Combine benchmark_model logs of a bundle's segments into the expected early-exit latency.

    python export/combine.py --bundle BUNDLE --logs LOG_DIR --out latency.csv [--distribution exits.csv]

A thin entry point for ``rdinet-bench`` (:mod:`rdinet_tf.cli.bench`, see there) that runs from a
checkout; needs numpy and ai-edge-litert, not TensorFlow or Keras.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from rdinet_tf.cli.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
