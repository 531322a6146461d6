"""Errors raised for bad user input, each naming the problem and the fix."""


class InputError(ValueError):
    """Bad input to a public function: wrong shape, bad thresholds, unknown name."""
