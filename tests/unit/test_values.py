"""Meter event values: exact parsing into scaled integers, canonical text, JSON numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.metering.values import (
    FRACTION_DIGITS,
    SCALE,
    SIGNIFICANT_DIGITS,
    InvalidValue,
    ValueTooManyDigits,
    as_number,
    canonical,
    parse_value,
)


def test_the_limits_are_stripes() -> None:
    assert (FRACTION_DIGITS, SIGNIFICANT_DIGITS, SCALE) == (12, 20, 10**12)


@pytest.mark.parametrize(
    ("text", "scaled"),
    [
        ("0", 0),
        ("25", 25 * SCALE),
        ("0.5", SCALE // 2),
        ("2.5", 2_500_000_000_000),
        ("2.50", 2_500_000_000_000),
        ("10", 10 * SCALE),
        ("0.000000000001", 1),
        ("123.456", 123_456_000_000_000),
    ],
)
def test_parse_value(text: str, scaled: int) -> None:
    assert parse_value(text) == scaled


@pytest.mark.parametrize(
    "text",
    [
        "0.000000000001",  # 12 fractional digits
        "1.123456789012",
        "99999999.999999999999",  # 8 + 12 = 20 significant digits
        "12345678901234567890",  # 20 significant digits, no fraction
        "1234567890.1234567891",  # 10 + 10
        "0.123456789012",
    ],
)
def test_values_at_the_digit_limits_are_accepted(text: str) -> None:
    assert as_number(parse_value(text)) == Decimal(text)


@pytest.mark.parametrize(
    "text",
    [
        "0.0000000000001",  # 13 fractional digits
        "1.1234567890123",
        "123456789.123456789012",  # 9 + 12 = 21 significant digits
        "123456789012345678901",  # 21 significant digits, no fraction
        "12345678901.1234567891",  # 11 + 10
        "99999999999999999999.9",  # 20 + 1
    ],
)
def test_one_digit_over_the_limits_is_too_many(text: str) -> None:
    with pytest.raises(ValueTooManyDigits):
        parse_value(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "-1",
        "-0.5",
        "abc",
        "1.2.3",
        "1,5",
        "NaN",
        "Infinity",
        "0x10",
        "1-",
        "--1",
        "١٢",  # non-ASCII digits (int() would accept them)
        "\uff11",  # FULLWIDTH DIGIT ONE
    ],
)
def test_non_numbers_and_negatives_are_invalid(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_value(text)


def test_the_two_errors_are_value_errors() -> None:
    assert issubclass(InvalidValue, ValueError)
    assert issubclass(ValueTooManyDigits, ValueError)


@pytest.mark.parametrize(
    ("scaled", "text"),
    [
        (0, "0"),
        (SCALE, "1"),
        (2_500_000_000_000, "2.5"),
        (1, "0.000000000001"),
        (10 * SCALE + 10, "10.00000000001"),
        (-2_500_000_000_000, "-2.5"),
        (-1, "-0.000000000001"),
        (10**40, "10000000000000000000000000000"),  # sums may outgrow 20 digits
    ],
)
def test_canonical(scaled: int, text: str) -> None:
    assert canonical(scaled) == text


def test_as_number_is_an_int_when_whole_and_an_exact_decimal_otherwise() -> None:
    assert as_number(25 * SCALE) == 25 and type(as_number(25 * SCALE)) is int
    assert as_number(0) == 0 and type(as_number(0)) is int
    assert as_number(1) == Decimal("0.000000000001")
    assert type(as_number(1)) is Decimal
    big = 10**30 + 1  # more digits than the default decimal context keeps
    assert as_number(big) == Decimal("1000000000000000000.000000000001")
    assert as_number(-SCALE // 2) == Decimal("-0.5")


# round trips --------------------------------------------------------------------------------


@st.composite
def decimals_within_limits(draw: st.DrawFn) -> Decimal:
    """Non-negative decimals with at most 12 fractional and 20 significant digits."""
    places = draw(st.integers(0, FRACTION_DIGITS))
    digits = draw(st.integers(0, 10**SIGNIFICANT_DIGITS - 1))
    return unscaled(digits, places)


def unscaled(digits: int, places: int = FRACTION_DIGITS) -> Decimal:
    """``digits * 10**-places`` exactly (the constructor never rounds; ``scaleb`` would)."""
    return Decimal(f"{digits}E-{places}")


def scaled_of(value: Decimal) -> int:
    """``value * 10**12`` as an exact int."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int) and sign == 0
    number = int("".join(map(str, digits)))
    shift = exponent + FRACTION_DIGITS
    assert shift >= 0
    return number * 10**shift


def plain(value: Decimal) -> str:
    """Fixed-point text, never exponent notation."""
    return format(value, "f")


@settings(max_examples=300)
@given(value=decimals_within_limits())
def test_parse_is_exact(value: Decimal) -> None:
    scaled = parse_value(plain(value))
    assert scaled == scaled_of(value)
    assert as_number(scaled) == value
    assert Decimal(canonical(scaled)) == value


@settings(max_examples=300)
@given(value=decimals_within_limits(), leading=st.integers(0, 3), trailing=st.integers(0, 3))
def test_leading_and_trailing_zeros_do_not_change_the_value(
    value: Decimal, leading: int, trailing: int
) -> None:
    text = plain(value)
    if "." not in text:
        text += "."  # "5." is how the trailing zeros below attach to a whole number
    if len(text.split(".")[1]) + trailing > FRACTION_DIGITS:
        trailing = 0
    padded = "0" * leading + text + "0" * trailing
    assert parse_value(padded) == parse_value(plain(value))


@settings(max_examples=300)
@given(scaled=st.integers(0, 10**SIGNIFICANT_DIGITS - 1))
def test_canonical_round_trips_and_is_shortest(scaled: int) -> None:
    text = canonical(scaled)
    assert parse_value(text) == scaled
    whole, _, fraction = text.partition(".")
    assert whole == "0" or not whole.startswith("0")
    assert not fraction.endswith("0")
    assert "." not in text or fraction
    assert canonical(parse_value(text)) == text


@settings(max_examples=300)
@given(scaled=st.integers(-(10**30), 10**30))
def test_as_number_equals_the_scaled_value_exactly(scaled: int) -> None:
    number = as_number(scaled)
    assert type(number) in (int, Decimal)
    assert Decimal(number) == unscaled(scaled)
    assert (type(number) is int) == (scaled % SCALE == 0)


@settings(max_examples=200)
@given(a=decimals_within_limits(), b=decimals_within_limits())
def test_sums_of_scaled_values_are_exact(a: Decimal, b: Decimal) -> None:
    total = parse_value(plain(a)) + parse_value(plain(b))
    # The exact sum may need 32 digits; Decimal's default context would round it to 28.
    assert total == scaled_of(a) + scaled_of(b)
    assert as_number(total) == unscaled(scaled_of(a) + scaled_of(b))
