"""The command lines by name, for ``python -m`` of a package that has none of its own."""

import sys

COMMANDS = {
    "rdinet-train": "train, calibrate, evaluate and save an RDI-Net (python -m rdinet_tf.train)",
    "rdinet-evaluate": "robustness report of a trained model (python -m rdinet_tf.evaluation)",
    "rdinet-export": "TFLite bundle or SavedModel of a trained model (python -m rdinet_tf.export)",
    "rdinet-prune": "the pruned single-exit baseline at a cost budget (python -m rdinet_tf.baselines)",
    "rdinet-import-torch": "a reference PyTorch checkpoint as a .keras model (python -m rdinet_tf.models)",
    "rdinet-bench": "on-device latency from benchmark_model logs (python -m rdinet_lite)",
}


def commands():
    """The command lines, one per line with what each does."""
    return "\n".join(f"  {name:<21}{summary}" for name, summary in COMMANDS.items())


def name_the_commands(package, hint=None):
    """For ``python -m`` of a package without a command: say on stderr which to run, then exit with code 2.

    With ``hint`` (the command that does the package's work) one line; else the list of commands.
    """
    if hint:
        print(f"{package} has no command of its own: {hint} (python -m rdinet_tf lists the commands)",
              file=sys.stderr)
    else:
        print(f"{package} has no command of its own; the commands (each with --help):\n{commands()}",
              file=sys.stderr)
    raise SystemExit(2)
