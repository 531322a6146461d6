"""The command lines' parser, error convention and argument types (no TensorFlow: the device tools use it).

Convention: a usage or input error ends the command with exit code 2 and one
line ``error: <what is wrong and how to fix it>`` on stderr, never a traceback.
"""

import argparse
import functools
import math
import sys

from rdinet_tf.errors import InputError


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors follow the convention (one line, exit code 2)."""

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)")


def fail(message):
    """End the command: ``error: <message>`` on one line of stderr, exit code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(2)


def command(parser_factory):
    """Decorate ``run(args)`` into ``main(argv=None) -> 0`` that applies the error convention."""

    def wrap(run):
        @functools.wraps(run)
        def main(argv=None):
            args = parser_factory().parse_args(argv)
            try:
                run(args)
            except (InputError, OSError) as error:
                fail(error)
            return 0

        return main

    return wrap


def _number(kind, minimum, inclusive, text):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        bound = f">= {minimum}" if inclusive else f"> {minimum}"
        raise argparse.ArgumentTypeError(f"must be {bound}; got {text}")
    return value


positive_int = functools.partial(_number, int, 1, True)
non_negative_int = functools.partial(_number, int, 0, True)
positive_float = functools.partial(_number, float, 0.0, False)
non_negative_float = functools.partial(_number, float, 0.0, True)
