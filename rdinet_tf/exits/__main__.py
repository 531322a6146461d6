"""``python -m rdinet_tf.exits``: names the command to run (exits is a library package)."""

from rdinet_tf.cli.commands import name_the_commands

name_the_commands("rdinet_tf.exits", "rdinet-train and rdinet-evaluate calibrate the exit thresholds (--calibration)")
