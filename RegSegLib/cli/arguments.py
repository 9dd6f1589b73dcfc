"""Argument types of the ``regseg`` commands: numbers and comma-separated lists as typed on a command line.

Only the text is parsed here; ranges and combinations are checked by the methods' settings
(:mod:`RegSegLib.registration.settings`) or, for labels and channels, by :func:`number_list` itself.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
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


_label_list = number_list(int, "integer labels", minimum=0)


def labels(text: str) -> list[int]:
    """An argparse type: labels as ``2,3,41`` or a text file listing them (separated by spaces, commas or
    new lines; ``#`` starts a comment), such as ``labels.txt`` of a label set."""
    path = Path(text)
    if not path.is_file():
        return _label_list(text)
    try:
        content = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"{text}: cannot read the label list ({exc})") from exc
    words = [word for line in content.splitlines() for word in re.split(r"[\s,]+", line.split("#")[0]) if word]
    try:
        return _label_list(",".join(words))
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text}: {exc}") from exc


channel = number(int, "channel number", minimum=0)
