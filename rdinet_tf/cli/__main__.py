"""``python -m rdinet_tf.cli``: names the command lines."""

from rdinet_tf.cli.commands import name_the_commands

name_the_commands("rdinet_tf.cli")
