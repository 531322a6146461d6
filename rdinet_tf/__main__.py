"""``python -m rdinet_tf``: names the command lines (:mod:`rdinet_tf.cli`)."""

from rdinet_tf.cli.commands import name_the_commands

name_the_commands("rdinet_tf")
