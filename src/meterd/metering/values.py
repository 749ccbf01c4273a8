"""Meter event values: decimal strings summed exactly, as integers scaled by 10^12.

A value is stored as the integer ``value * 10**12`` (Python ints never overflow, and no binary
float ever touches a sum), and rendered back as a JSON number without losing a digit.
"""

from __future__ import annotations

import re
from decimal import Decimal

FRACTION_DIGITS = 12
SIGNIFICANT_DIGITS = 20
SCALE: int = 10**FRACTION_DIGITS

_DECIMAL = re.compile(r"([0-9]*)(?:\.([0-9]*))?")


class ValueTooManyDigits(ValueError):
    """More than 12 fractional or 20 significant digits (``meter_event_value_too_many_digits``)."""


class InvalidValue(ValueError):
    """Not a non-negative decimal number (``meter_event_invalid_value``)."""


def parse_value(text: str) -> int:
    """``"2.5"`` -> 2_500_000_000_000, or :class:`InvalidValue` / :class:`ValueTooManyDigits`."""
    if len(text) <= 7 and text.isascii() and text.isdigit():
        return int(text) * SCALE
    match = _DECIMAL.fullmatch(text)
    if match is None or not (match.group(1) or match.group(2)):
        raise InvalidValue(text)
    whole: str = match.group(1)
    fraction: str = (match.group(2) or "").rstrip("0")
    significant = (whole.lstrip("0") + fraction) if whole.lstrip("0") else fraction.lstrip("0")
    if len(fraction) > FRACTION_DIGITS or len(significant) > SIGNIFICANT_DIGITS:
        raise ValueTooManyDigits(text)
    return int(whole or "0") * SCALE + int(fraction.ljust(FRACTION_DIGITS, "0"))


def canonical(scaled: int) -> str:
    """The shortest decimal text of a scaled value: 2_500_000_000_000 -> ``"2.5"``."""
    sign = "-" if scaled < 0 else ""
    whole, fraction = divmod(abs(scaled), SCALE)
    if fraction == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{str(fraction).rjust(FRACTION_DIGITS, '0').rstrip('0')}"


def as_number(scaled: int) -> int | Decimal:
    """What ``aggregated_value`` renders: an int when whole, else an exact Decimal."""
    if scaled % SCALE == 0:
        return scaled // SCALE
    return Decimal(canonical(scaled))
