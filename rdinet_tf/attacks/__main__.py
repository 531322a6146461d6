"""``python -m rdinet_tf.attacks``: names the command to run (attacks is a library package)."""

from rdinet_tf.cli.commands import name_the_commands

name_the_commands("rdinet_tf.attacks", "rdinet-evaluate runs the attacks (--attacks, --autoattack)")
