"""``python -m rdinet_tf.train ...``: the training command line (:mod:`rdinet_tf.cli.train`)."""

from rdinet_tf.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
