"""``python -m rdinet_tf.training ...`` runs ``rdinet-train`` (:mod:`rdinet_tf.cli.train`)."""

from rdinet_tf.cli.train import main

raise SystemExit(main())
