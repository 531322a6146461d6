"""``python -m rdinet_tf.export ...`` runs ``rdinet-export`` (:mod:`rdinet_tf.cli.export`)."""

from rdinet_tf.cli.export import main

raise SystemExit(main())
