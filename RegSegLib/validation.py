"""Validation shared by every settings object of RegSegLib: one error type and one wording of each rule.

A settings object is a frozen dataclass that checks itself in ``__post_init__`` with these functions, so a
bad value fails before any work starts, with the same message from the command line, the Slicer panel or a
script.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import fields, replace
from typing import Any, Sequence

from RegSegLib.errors import RegSegError


class SettingsError(RegSegError, ValueError):
    """A setting with a value the methods do not accept."""


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (``True`` and ``False`` are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_choice(value: Any, allowed: Sequence[str], what: str) -> None:
    """Raises :class:`SettingsError` naming ``what`` and the allowed values unless ``value`` is one of them."""
    if value not in allowed:
        raise SettingsError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")


def check_positive(value: Any, what: str, *, integer: bool = False, zero_allowed: bool = False) -> None:
    """Raises :class:`SettingsError` unless ``value`` is a finite positive (or zero) number (whole if ``integer``)."""
    ok = is_number(value) and math.isfinite(value) and (not integer or float(value).is_integer())
    if not ok or value < 0 or (value == 0 and not zero_allowed):
        sign = "non-negative" if zero_allowed else "positive"
        noun = "whole number" if integer else "number"
        raise SettingsError(f"{what} must be a {sign} {noun}, got {value!r}")


def check_counts(values: Sequence[Any], what: str, *, integer: bool, zero_allowed: bool = False) -> tuple:
    """``values`` as a non-empty tuple of finite positive (or zero) numbers."""
    values = tuple(values)
    if not values:
        raise SettingsError(f"{what} are empty")
    for value in values:
        check_positive(value, what, integer=integer, zero_allowed=zero_allowed)
    return tuple(int(v) for v in values) if integer else tuple(float(v) for v in values)


class Overridable:
    """Mixin of a settings dataclass: copies with some fields changed, unknown names refused.

    Subclasses name themselves in :attr:`WHAT` (``"affine"``, ``"deformable"``, ...) for the messages.
    """

    WHAT = "settings"

    def overridden(self, **options: Any):
        """A copy with some fields changed (validated again).

        Raises:
            SettingsError: an unknown field or a bad value.
        """
        names = {f.name for f in fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(options) - names)
        if unknown:
            raise SettingsError(f"unknown {self.WHAT} setting(s) {unknown}; known: {sorted(names)}")
        return replace(self, **options) if options else self  # type: ignore[type-var]
