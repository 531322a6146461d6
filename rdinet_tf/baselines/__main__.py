"""``python -m rdinet_tf.baselines ...`` runs ``rdinet-prune`` (:mod:`rdinet_tf.cli.prune`)."""

from rdinet_tf.cli.prune import main

raise SystemExit(main())
