"""The argparse types of the command line's numbers: each says what it expected and what range it takes."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_type(expected: str, fits: Callable[[int], bool], refusal: str) -> Callable[[str], int]:
    """An argparse type for a whole number: `expected` names it when the text is no number, `refusal` (with
    {value}) says why a number that does not `fit` is refused."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not fits(value):
            raise argparse.ArgumentTypeError(refusal.format(value=value))
        return value

    return parse


positive_int = int_type("a whole number", lambda v: v >= 1, "must be at least 1, got {value}")
trial_number = int_type("a trial number", lambda v: v >= 0, "trial numbers start at 0, got {value}")
port = int_type("a port number", lambda v: 0 <= v <= 65535, "must be 0 to 65535, got {value}")
