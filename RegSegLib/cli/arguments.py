"""Argument types of the ``regseg`` commands: numbers and comma-separated lists as typed on a command line.

Only the text is parsed here; ranges and combinations are checked by the methods' settings
(:mod:`RegSegLib.registration.settings`) or, for labels and channels, by :func:`number_list` itself.
"""

from __future__ import annotations

import argparse
from typing import Callable


def number_list(kind: type, what: str, minimum: float | None = None) -> Callable[[str], list]:
    """An argparse type: comma-separated numbers of ``kind`` (each at least ``minimum`` when given)."""

    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from exc
        if not values:
            raise argparse.ArgumentTypeError(f"no {what} given")
        if minimum is not None and any(value < minimum for value in values):
            raise argparse.ArgumentTypeError(f"expected {what} of at least {minimum:g}, got {text!r}")
        return values

    return parse


def number(kind: type, what: str, minimum: float | None = None) -> Callable[[str], float | int]:
    """An argparse type: one number of ``kind`` (at least ``minimum`` when given)."""
    parse_list = number_list(kind, what, minimum)

    def parse(text: str) -> float | int:
        values = parse_list(text)
        if len(values) != 1:
            raise argparse.ArgumentTypeError(f"expected one {what}, got {text!r}")
        return values[0]

    return parse


labels = number_list(int, "integer labels", minimum=0)
channel = number(int, "channel number", minimum=0)
