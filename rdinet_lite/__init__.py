"""rdinet_lite: the device side of rdinet_tf, with numpy and ai-edge-litert only (no TensorFlow, no Keras).

Reads an exported bundle's manifest (:class:`Manifest`, :mod:`.manifest`: the one schema, which the exporter
writes), runs the bundle with entropy early exit (:class:`EarlyExitRunner`, :mod:`.runner`), times it on a
board or from LiteRT ``benchmark_model`` logs (:mod:`.latency`, the ``rdinet-bench`` command of :mod:`.bench`,
``python -m rdinet_lite.edge`` on a board), and holds the numpy-only foundations rdinet_tf builds on: input
checks (:mod:`.inputs`), cost accounting (:mod:`.accounting`), output files written whole
(:mod:`.files`), the command-line conventions (:mod:`.arguments`) and :class:`InputError`.

Importing it never loads TensorFlow, also where TensorFlow is installed.
"""

from rdinet_lite.errors import InputError
from rdinet_lite.manifest import Manifest
from rdinet_lite.runner import BatchResult, EarlyExitRunner, ExitResult

__version__ = "0.1.0"
__all__ = ["BatchResult", "EarlyExitRunner", "ExitResult", "InputError", "Manifest"]
