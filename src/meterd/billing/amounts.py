"""Amounts in a currency's minor unit: integers, or decimal strings with up to 12 places.

Stripe takes either ``amount`` (an integer) or ``amount_decimal`` (a string) and answers with
both: the integer only when the amount is whole, the string always. Amounts are kept as exact
:class:`~decimal.Decimal` values and never pass through a binary float.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from meterd.errors import InvalidRequestError

MAX_DECIMAL_PLACES = 12
MAX_INTEGER_DIGITS = 19
"""Stripe documents no ceiling; this one keeps amounts within what both databases and every
SDK's integer type hold (a signed 64-bit integer has 19 digits)."""


def from_decimal_string(text: str, param: str) -> Decimal:
    """A non-negative decimal with at most 12 decimal places, or 400 naming ``param``."""
    try:
        value = Decimal(text.strip()) if text.strip() == text else Decimal("nan")
    except InvalidOperation:
        value = Decimal("nan")
    if not value.is_finite() or "e" in text.lower():
        raise InvalidRequestError(f"Invalid decimal: {text[:40]}", param=param)
    return checked(value, param)


def from_integer(value: int, param: str) -> Decimal:
    return checked(Decimal(value), param)


def checked(value: Decimal, param: str) -> Decimal:
    if value < 0:
        raise InvalidRequestError("This value must be greater than or equal to 0.", param=param)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > MAX_DECIMAL_PLACES and value != value.quantize(Decimal(1).scaleb(-12)):
        raise InvalidRequestError(
            f"Invalid decimal: {value}; must have at most {MAX_DECIMAL_PLACES} decimal places",
            param=param,
        )
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        raise InvalidRequestError(
            f"Invalid decimal: {value}; must be less than 10^{MAX_INTEGER_DIGITS}", param=param
        )
    return normalized(value)


def normalized(value: Decimal) -> Decimal:
    """``1.50`` -> ``1.5``, ``2000.00`` -> ``2000`` (never an exponent)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def as_text(value: Decimal) -> str:
    """The decimal string Stripe answers with: ``"2000"``, ``"0.05"``."""
    return format(normalized(value), "f")


def as_integer(value: Decimal) -> int | None:
    """The integer field beside a decimal one: set only when the amount is whole."""
    return int(value) if value == value.to_integral_value() else None
