"""``python -m rdinet_tf.architecture``: names the command to run (architecture is a library package)."""

from rdinet_tf.cli.commands import name_the_commands

name_the_commands("rdinet_tf.architecture", "rdinet-train builds and trains its networks (--model)")
