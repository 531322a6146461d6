"""The command lines' parser, error convention and argument types (no TensorFlow: the device tools use it).

Convention: a usage or input error, a fault (full disk, unreadable file) and
a SIGTERM end the command with one line ``error: <what is wrong and how to
fix it>`` on stderr, never a traceback: exit code 2, or 143 (128 + SIGTERM)
when terminated. Set ``RDINET_TRACEBACK=1`` to see the traceback of an
unexpected error instead.
"""

import argparse
import contextlib
import functools
import math
import os
import re
import signal
import sys

from rdinet_lite.errors import InputError

MAX_MESSAGE = 400  # characters of an error line
TERMINATED = 128 + signal.SIGTERM
TRACEBACK_ENV = "RDINET_TRACEBACK"
SEED_LIMIT = 2**32  # Keras and numpy seeds are unsigned 32-bit


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that ``finally`` blocks remove what a command was writing."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors follow the convention (one line, exit code 2), and whose
    description, taken from a module docstring, reads as plain text (no reStructuredText markup)."""

    def __init__(self, *args, description=None, **kwargs):
        if description is not None:
            description = re.sub(r":\w+:`~?([^`]*)`", r"\1", description).replace("``", "")
        super().__init__(*args, description=description, **kwargs)

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)")


def one_line(message, limit=MAX_MESSAGE):
    """``message`` on one line of at most ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 5] + " ..."


def fail(message, code=2):
    """End the command: ``error: <message>`` on one line of stderr, exit code ``code`` (2)."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(code)


def _raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_as_exception():
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (cleanups run)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def guarded(run, *args):
    """``run(*args)`` under the error convention; returns its result."""
    try:
        with sigterm_as_exception():
            return run(*args)
    except Terminated:
        fail("terminated (SIGTERM); nothing half-written was kept: rerun the command to continue", TERMINATED)
    except (InputError, OSError) as error:
        fail(error)
    except MemoryError:
        fail("out of memory; use fewer or smaller inputs (e.g. a smaller --batch-size or --samples)")
    except RecursionError:
        fail("an input is nested too deeply to be read (a crafted or corrupt file?)")
    except Exception as error:  # noqa: BLE001 - the convention: never a traceback
        if os.environ.get(TRACEBACK_ENV):
            raise
        fail(f"unexpected {type(error).__name__}: {one_line(error, 250)} (set {TRACEBACK_ENV}=1 for the traceback)")


def command(parser_factory):
    """Decorate ``run(args)`` into ``main(argv=None) -> 0`` that applies the error convention."""

    def wrap(run):
        @functools.wraps(run)
        def main(argv=None):
            args = parser_factory().parse_args(argv)
            guarded(run, args)
            return 0

        return main

    return wrap


def _number(kind, minimum, inclusive, text, maximum=None):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        bound = f">= {minimum}" if inclusive else f"> {minimum}"
        raise argparse.ArgumentTypeError(f"must be {bound}; got {text}")
    if maximum is not None and value >= maximum:
        raise argparse.ArgumentTypeError(f"must be below {maximum}; got {text}")
    return value


positive_int = functools.partial(_number, int, 1, True)
non_negative_int = functools.partial(_number, int, 0, True)
positive_float = functools.partial(_number, float, 0.0, False)
non_negative_float = functools.partial(_number, float, 0.0, True)


def seed(text):
    """A random seed: an integer in [0, 2**32)."""
    return _number(int, 0, True, text, maximum=SEED_LIMIT)
