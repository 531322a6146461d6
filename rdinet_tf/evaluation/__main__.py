"""``python -m rdinet_tf.evaluation ...`` runs ``rdinet-evaluate`` (:mod:`rdinet_tf.cli.evaluate`)."""

from rdinet_tf.cli.evaluate import main

raise SystemExit(main())
