"""Amounts in a currency's minor unit: integers, or decimal strings with up to 12 places.

Stripe takes either ``amount`` (an integer) or ``amount_decimal`` (a string) and answers with
both: the integer only when the amount is whole, the string always. Amounts are kept as exact
:class:`~decimal.Decimal` values and never pass through a binary float; arithmetic on them
runs in :data:`EXACT`, whose precision no product of an amount and a quantity reaches.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal

from meterd.errors import InvalidRequestError

MAX_DECIMAL_PLACES = 12
MAX_AMOUNT = 2**63 - 1
"""Stripe documents no ceiling; this one keeps amounts (and tier bounds) within what both
databases and every typed SDK's integer holds: a signed 64-bit integer."""

EXACT = Context(prec=1000)
"""Amounts have at most 32 digits and quantities (meter aggregates) far fewer than 900, so
sums and products in this context are never rounded."""

_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")


def from_decimal_string(text: str, param: str) -> Decimal:
    """Plain ASCII digits with an optional fraction (``"0.05"``), non-negative, at most 12
    decimal places; else 400 naming ``param``."""
    match = _DECIMAL.fullmatch(text) if text.isascii() else None
    if match is None:
        raise InvalidRequestError(f"Invalid decimal: {text[:40]}", param=param)
    sign, whole, fraction = match.groups()
    fraction = (fraction or "").rstrip("0")
    if sign and (whole.strip("0") or fraction):
        raise _negative(param)
    if len(fraction) > MAX_DECIMAL_PLACES:
        raise InvalidRequestError(
            f"Invalid decimal: {text[:40]}; must have at most {MAX_DECIMAL_PLACES} decimal places",
            param=param,
        )
    whole = whole.lstrip("0") or "0"
    value = Decimal(f"{whole}.{fraction}" if fraction else whole)
    if value > MAX_AMOUNT:
        raise too_large(text, param)
    return value


def from_integer(value: int, param: str) -> Decimal:
    if value < 0:
        raise _negative(param)
    if value > MAX_AMOUNT:
        raise too_large(str(value), param)
    return Decimal(value)


def too_large(text: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid integer: {text[:40]}; must be at most {MAX_AMOUNT}", param=param
    )


def normalized(value: Decimal) -> Decimal:
    """``1.50`` -> ``1.5``, ``2000.00`` -> ``2000``, ``-0`` -> ``0``, exactly."""
    if value.is_zero():
        return Decimal(0)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return Decimal(text)


def as_text(value: Decimal) -> str:
    """The decimal string Stripe answers with: ``"2000"``, ``"0.05"``."""
    return format(normalized(value), "f")


def as_integer(value: Decimal) -> int | None:
    """The integer field beside a decimal one: set only when the amount is whole."""
    whole = value.to_integral_value(context=EXACT)
    return int(whole) if value == whole else None


def _negative(param: str) -> InvalidRequestError:
    return InvalidRequestError("This value must be greater than or equal to 0.", param=param)
