"""``python -m rdinet_tf.export --tflite ...``: the export command line (:mod:`rdinet_tf.cli.export`)."""

from rdinet_tf.cli.export import main

raise SystemExit(main())
