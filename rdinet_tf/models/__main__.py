"""``python -m rdinet_tf.models ...`` runs ``rdinet-import-torch`` (:mod:`rdinet_tf.cli.import_torch`)."""

from rdinet_tf.cli.import_torch import main

raise SystemExit(main())
