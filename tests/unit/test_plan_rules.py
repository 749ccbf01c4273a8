"""Plan rules, amounts, metadata and currencies: each broken rule is a 400 naming its param."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from meterd.billing import amounts, currencies, metadata
from meterd.billing.plans import (
    MAX_INTERVAL_COUNT,
    Interval,
    Plan,
    PlanInput,
    TierInput,
    TransformUsage,
    check_meter,
    check_trial_period_days,
    new_plan,
)
from meterd.errors import InvalidRequestError
from meterd.metering.meters import Meter, deactivated, new_meter
from meterd.scope import Scope

SCOPE = Scope("acct_rules", True)
NOW = 1_767_225_600
TIERS = [TierInput(10, unit_amount=100), TierInput("inf", unit_amount=50)]


def plan(**fields: Any) -> Plan:
    given = PlanInput(**{"currency": "usd", "interval": "month", "amount": 100, **fields})
    return new_plan(SCOPE, given, product="prod_x", now=NOW)


def tiered(**fields: Any) -> dict[str, Any]:
    return {"amount": None, "billing_scheme": "tiered", "tiers_mode": "graduated", **fields}


def rejected(**fields: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        plan(**fields)
    assert caught.value.http_status == 400
    return caught.value


def meter() -> Meter:
    return new_meter(
        SCOPE,
        display_name="Tokens",
        event_name="tokens",
        formula="sum",
        customer_key=None,
        value_key=None,
        event_time_window=None,
        now=NOW,
    )


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"amount": None}, "amount"),
        ({"amount": -1}, "amount"),
        ({"amount": 2**63}, "amount"),
        ({"amount": None, "amount_decimal": "-0.5"}, "amount_decimal"),
        ({"amount": None, "amount_decimal": "0.0000000000001"}, "amount_decimal"),
        ({"amount": None, "amount_decimal": "9223372036854775807.5"}, "amount_decimal"),
        ({"tiers": TIERS}, "tiers"),
        ({"tiers": []}, "tiers"),
        ({"tiers_mode": "volume"}, "tiers_mode"),
        ({"transform_usage": TransformUsage(0, "up")}, "transform_usage[divide_by]"),
        (tiered(amount=100), "amount"),
        (tiered(amount_decimal="1.5"), "amount_decimal"),
        (tiered(tiers=TIERS, transform_usage=TransformUsage(5, "up")), "transform_usage"),
        (tiered(), "tiers"),
        (tiered(tiers=[]), "tiers"),
        (tiered(tiers=TIERS, tiers_mode=None), "tiers_mode"),
        (tiered(tiers=[TierInput(5, unit_amount=1)]), "tiers[0][up_to]"),
        (
            tiered(tiers=[TierInput(5, unit_amount=1), TierInput(9, unit_amount=1)]),
            "tiers[1][up_to]",
        ),
        (
            tiered(tiers=[TierInput("inf", unit_amount=1), TierInput("inf", unit_amount=1)]),
            "tiers[0][up_to]",
        ),
        (
            tiered(
                tiers=[
                    TierInput(5, unit_amount=1),
                    TierInput("inf", unit_amount=1),
                    TierInput("inf", unit_amount=1),
                ]
            ),
            "tiers[1][up_to]",
        ),
        (
            tiered(
                tiers=[
                    TierInput(5, unit_amount=1),
                    TierInput(5, unit_amount=1),
                    TierInput("inf", unit_amount=1),
                ]
            ),
            "tiers[1][up_to]",
        ),
        (
            tiered(
                tiers=[
                    TierInput(10, unit_amount=1),
                    TierInput(20, unit_amount=1),
                    TierInput(15, unit_amount=1),
                    TierInput("inf", unit_amount=1),
                ]
            ),
            "tiers[2][up_to]",
        ),
        (tiered(tiers=[TierInput(0, unit_amount=1), TIERS[1]]), "tiers[0][up_to]"),
        (tiered(tiers=[TierInput("-1", unit_amount=1), TIERS[1]]), "tiers[0][up_to]"),
        (tiered(tiers=[TierInput("ten", unit_amount=1), TIERS[1]]), "tiers[0][up_to]"),
        (tiered(tiers=[TierInput("\uff15", unit_amount=1), TIERS[1]]), "tiers[0][up_to]"),
        (tiered(tiers=[TierInput(5), TIERS[1]]), "tiers[0]"),
        (tiered(tiers=[TIERS[0], TierInput("inf")]), "tiers[1]"),
        (tiered(tiers=[TierInput(5, unit_amount=-1), TIERS[1]]), "tiers[0][unit_amount]"),
        (
            tiered(tiers=[TIERS[0], TierInput("inf", unit_amount_decimal="1e3")]),
            "tiers[1][unit_amount_decimal]",
        ),
        (tiered(tiers=[TierInput(5, flat_amount=-5), TIERS[1]]), "tiers[0][flat_amount]"),
        (
            tiered(tiers=[TierInput(5, flat_amount_decimal="abc"), TIERS[1]]),
            "tiers[0][flat_amount_decimal]",
        ),
        ({"interval_count": 0}, "interval_count"),
        ({"interval_count": -1}, "interval_count"),
        ({"interval": "year", "interval_count": 4}, "interval_count"),
        ({"interval": "month", "interval_count": 37}, "interval_count"),
        ({"interval": "week", "interval_count": 157}, "interval_count"),
        ({"interval": "day", "interval_count": 1096}, "interval_count"),
        ({"usage_type": "metered"}, "meter"),
        ({"usage_type": "licensed", "meter": "mtr_123"}, "meter"),
        ({"trial_period_days": 731}, "trial_period_days"),
        ({"trial_period_days": -1}, "trial_period_days"),
    ],
)
def test_each_rule_names_its_param(fields: dict[str, Any], param: str) -> None:
    assert rejected(**fields).param == param


@pytest.mark.parametrize(
    "fields",
    [
        {"amount_decimal": "1.5"},
        tiered(tiers=[TierInput(5, unit_amount=1, unit_amount_decimal="1"), TIERS[1]]),
        tiered(tiers=[TierInput(5, flat_amount=1, flat_amount_decimal="1"), TIERS[1]]),
    ],
)
def test_integer_and_decimal_amounts_are_exclusive(fields: dict[str, Any]) -> None:
    assert rejected(**fields).code == "parameters_exclusive"


@pytest.mark.parametrize(
    "text", ["abc", "1e5", "1E5", " 1", "1 ", "", "NaN", "Infinity", "-1", "1.2.3", "0x10"]
)
def test_malformed_amount_decimal(text: str) -> None:
    assert rejected(amount=None, amount_decimal=text).param == "amount_decimal"


@pytest.mark.parametrize(("interval", "count"), sorted(MAX_INTERVAL_COUNT.items()))
def test_the_longest_interval_is_three_years(interval: Interval, count: int) -> None:
    assert plan(interval=interval, interval_count=count).interval_count == count
    assert rejected(interval=interval, interval_count=count + 1).param == "interval_count"


def test_interval_limits_are_stripes() -> None:
    assert MAX_INTERVAL_COUNT == {"year": 3, "month": 36, "week": 156, "day": 1095}


@pytest.mark.parametrize("days", [None, 0, 1, 730])
def test_trial_period_days_accepted(days: int | None) -> None:
    check_trial_period_days(days)
    assert plan(trial_period_days=days).trial_period_days == days


@pytest.mark.parametrize("days", [-1, 731, 10_000])
def test_trial_period_days_refused(days: int) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_trial_period_days(days)
    assert caught.value.param == "trial_period_days"


def test_a_valid_per_unit_plan() -> None:
    created = plan(
        amount=None,
        amount_decimal="1.50",
        nickname="",
        transform_usage=TransformUsage(1000, "down"),
        usage_type="metered",
        meter="mtr_123",
        metadata={"team": "core"},
    )
    assert created.id.startswith("price_") and len(created.id) == len("price_") + 24
    assert (created.account_id, created.livemode, created.created) == ("acct_rules", True, NOW)
    assert (created.amount, created.tiers, created.tiers_mode) == (Decimal("1.5"), (), None)
    assert (created.nickname, created.product, created.meter) == (None, "prod_x", "mtr_123")
    assert created.metadata == {"team": "core"}


def test_a_given_id_is_kept() -> None:
    assert plan(id="gold").id == "gold"


def test_a_valid_tiered_plan() -> None:
    created = plan(
        **tiered(
            tiers_mode="volume",
            tiers=[
                TierInput("5", flat_amount=0),
                TierInput(10, unit_amount_decimal="0.50", flat_amount_decimal="100.000"),
                TierInput("inf", unit_amount=1),
            ],
        )
    )
    assert created.amount is None and created.tiers_mode == "volume"
    assert [(t.up_to, t.unit_amount, t.flat_amount) for t in created.tiers] == [
        (5, None, Decimal(0)),
        (10, Decimal("0.5"), Decimal(100)),
        (None, Decimal(1), None),
    ]


def test_check_meter() -> None:
    check_meter("mtr_1", meter())
    with pytest.raises(InvalidRequestError) as missing:
        check_meter("mtr_gone", None)
    assert (missing.value.param, missing.value.code) == ("meter", "resource_missing")
    with pytest.raises(InvalidRequestError) as inactive:
        check_meter("mtr_1", deactivated(meter(), NOW))
    assert (inactive.value.param, inactive.value.code) == ("meter", None)


# amounts


@pytest.mark.parametrize(
    ("text", "shown", "integer"),
    [
        ("0", "0", 0),
        ("5", "5", 5),
        ("1.50", "1.5", None),
        ("2000.000", "2000", 2000),
        ("0.05", "0.05", None),
        ("105.5", "105.5", None),
        ("0.000000000001", "0.000000000001", None),
        ("1.0000000000000", "1", 1),
        ("9223372036854775807", "9223372036854775807", 9223372036854775807),
    ],
)
def test_decimal_amounts_render(text: str, shown: str, integer: int | None) -> None:
    value = amounts.from_decimal_string(text, "amount_decimal")
    assert value == Decimal(text)
    assert amounts.as_text(value) == shown
    assert amounts.as_integer(value) == integer


@pytest.mark.parametrize(
    ("value", "shown"),
    [(Decimal("1E+3"), "1000"), (Decimal("1.500"), "1.5"), (Decimal("2.50E+2"), "250")],
)
def test_as_text_never_has_an_exponent(value: Decimal, shown: str) -> None:
    assert amounts.as_text(value) == shown


@pytest.mark.parametrize("integer", [0, 1, 2000, 2**63 - 1])
def test_integer_amounts(integer: int) -> None:
    value = amounts.from_integer(integer, "amount")
    assert (amounts.as_text(value), amounts.as_integer(value)) == (str(integer), integer)


@pytest.mark.parametrize(("integer", "param"), [(-1, "amount"), (2**63, "flat_amount")])
def test_integer_amounts_refused(integer: int, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        amounts.from_integer(integer, param)
    assert caught.value.param == param


@pytest.mark.parametrize(
    "text", ["10000000000000000.000000000001", "1234567890123456789.123456789012"]
)
def test_amounts_within_the_limits_are_kept_exactly(text: str) -> None:
    value = amounts.from_decimal_string(text, "amount_decimal")
    assert (amounts.as_text(value), amounts.as_integer(value)) == (text, None)


def test_thirteen_places_on_a_large_amount_is_a_400() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        amounts.from_decimal_string("12345678901234567.0000000000001", "amount_decimal")
    assert caught.value.param == "amount_decimal"


@pytest.mark.parametrize("text", ["1_000", "\u0661\u0662", "\uff15"])
def test_decimal_strings_are_ascii_digits(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        amounts.from_decimal_string(text, "amount_decimal")


def test_negative_zero_renders_as_zero() -> None:
    assert amounts.as_text(amounts.from_decimal_string("-0", "amount_decimal")) == "0"


# metadata


def test_metadata_created_skips_empty_values() -> None:
    assert metadata.created({"a": "1", "b": ""}) == {"a": "1"}
    assert metadata.created(None) == {}
    assert metadata.created("") == {}


def test_metadata_updated_merges_and_removes() -> None:
    stored = {"a": "1", "b": "2"}
    assert metadata.updated(stored, {"b": "", "c": "3", "gone": ""}) == {"a": "1", "c": "3"}
    assert metadata.updated(stored, {"a": "one"}) == {"a": "one", "b": "2"}
    assert metadata.updated(stored, None) == stored
    assert metadata.updated(stored, "") == {}
    assert stored == {"a": "1", "b": "2"}


def test_metadata_at_the_limits() -> None:
    full = {f"k{i}": "v" for i in range(50)}
    assert metadata.created(full) == full
    assert metadata.created({"k" * 40: "v" * 500}) == {"k" * 40: "v" * 500}
    swapped = {**full, "new": "v"}
    del swapped["k0"]
    assert metadata.updated(full, {"k0": "", "new": "v"}) == swapped


@pytest.mark.parametrize(
    ("stored", "sent", "param"),
    [
        ({}, {f"k{i}": "v" for i in range(51)}, "metadata"),
        ({f"k{i}": "v" for i in range(50)}, {"one_more": "v"}, "metadata"),
        ({}, {"k" * 41: "v"}, "metadata"),
        ({}, {"key": "v" * 501}, "metadata[key]"),
        ({}, "not a hash", "metadata"),
    ],
)
def test_metadata_refused(stored: dict[str, str], sent: metadata.MetadataParam, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        metadata.updated(stored, sent)
    assert caught.value.param == param


# currencies


@pytest.mark.parametrize(("given", "code"), [("USD", "usd"), ("usd", "usd"), ("Jpy", "jpy")])
def test_currency_is_lowercased(given: str, code: str) -> None:
    assert currencies.checked(given) == code


@pytest.mark.parametrize("given", ["xyz", "", "us", "usdollar"])
def test_unknown_currency(given: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        currencies.checked(given)
    assert caught.value.param == "currency"


def test_unknown_currency_names_the_param_given() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        currencies.checked("xyz", "currency_options")
    assert caught.value.param == "currency_options"


@pytest.mark.parametrize(
    ("currency", "digits"),
    [("usd", 2), ("eur", 2), ("jpy", 0), ("krw", 0), ("xof", 0), ("kwd", 3), ("bhd", 3)],
)
def test_minor_unit_digits(currency: str, digits: int) -> None:
    assert currencies.minor_unit_digits(currency) == digits


def test_special_currencies_are_supported_and_distinct() -> None:
    assert currencies.ZERO_DECIMAL <= currencies.SUPPORTED
    assert currencies.THREE_DECIMAL <= currencies.SUPPORTED
    assert not currencies.ZERO_DECIMAL & currencies.THREE_DECIMAL
