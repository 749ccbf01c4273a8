"""Pricing: Stripe's documented worked examples, then properties against independent recounts."""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.billing import pricing
from meterd.billing.plans import (
    Plan,
    PlanInput,
    Rounding,
    Tier,
    TierInput,
    TiersMode,
    TransformUsage,
    new_plan,
)
from meterd.billing.pricing import Charge
from meterd.scope import Scope

SCOPE = Scope("acct_pricing", False)

TYPOGRAPHIC_TIERS = (
    TierInput(5, unit_amount=700),
    TierInput(10, unit_amount=650),
    TierInput("inf", unit_amount=600),
)
FIVE_STEP_TIERS = (
    TierInput(5, unit_amount=500),
    TierInput(10, unit_amount=400),
    TierInput(15, unit_amount=300),
    TierInput(20, unit_amount=200),
    TierInput("inf", unit_amount=100),
)


def plan(**fields: Any) -> Plan:
    given = PlanInput(**{"currency": "usd", "interval": "month", **fields})
    return new_plan(SCOPE, given, product="prod_x", now=0)


def tiered(mode: TiersMode, tiers: tuple[TierInput, ...] | list[TierInput]) -> Plan:
    return plan(billing_scheme="tiered", tiers_mode=mode, tiers=tiers)


def packaged(amount: int, divide_by: int, rounding: Rounding) -> Plan:
    return plan(amount=amount, transform_usage=TransformUsage(divide_by, rounding))


def cost(priced: Plan, quantity: int | str | Decimal) -> Decimal:
    return pricing.charge(priced, Decimal(quantity)).amount


# Worked examples from Stripe's documentation, amounts in cents.


# https://docs.stripe.com/subscriptions/pricing-models/tiered-pricing#volume-based-pricing
@pytest.mark.parametrize(
    ("quantity", "cents"), [(1, 700), (5, 3500), (6, 3900), (20, 12000), (25, 15000)]
)
def test_typographic_volume(quantity: int, cents: int) -> None:
    assert cost(tiered("volume", TYPOGRAPHIC_TIERS), quantity) == cents


# https://docs.stripe.com/subscriptions/pricing-models/tiered-pricing#graduated-pricing
# (5 fonts cost the same 35 USD as with volume; the rest is 5 x 7 + n x 6.50 + m x 6 USD).
@pytest.mark.parametrize(
    ("quantity", "cents"), [(1, 700), (5, 3500), (6, 4150), (20, 12750), (25, 15750)]
)
def test_typographic_graduated(quantity: int, cents: int) -> None:
    assert cost(tiered("graduated", TYPOGRAPHIC_TIERS), quantity) == cents


# https://stripe.com/docs/billing/subscriptions/tiers (per-unit table, unit_amount=500)
@pytest.mark.parametrize(
    ("quantity", "cents"), [(1, 500), (5, 2500), (6, 3000), (20, 10000), (25, 12500)]
)
def test_per_unit_table(quantity: int, cents: int) -> None:
    assert cost(plan(amount=500), quantity) == cents


# https://stripe.com/docs/billing/subscriptions/tiers#volume
@pytest.mark.parametrize(
    ("quantity", "cents"), [(1, 500), (5, 2500), (6, 2400), (20, 4000), (25, 2500)]
)
def test_five_step_volume(quantity: int, cents: int) -> None:
    assert cost(tiered("volume", FIVE_STEP_TIERS), quantity) == cents


# https://stripe.com/docs/billing/subscriptions/tiers#graduated ("the total cost for an amount
# of 6 is $29: $25 for the 5 that fall into the 1-5 tier, plus $4 for the 6-10 tier")
@pytest.mark.parametrize(
    ("quantity", "cents"), [(1, 500), (5, 2500), (6, 2900), (20, 7000), (25, 7500)]
)
def test_five_step_graduated(quantity: int, cents: int) -> None:
    assert cost(tiered("graduated", FIVE_STEP_TIERS), quantity) == cents


# https://docs.stripe.com/billing/subscriptions/usage-based-v1/use-cases/flat-fee-and-overages
# ("include 1,000 monthly video streams in a 200 USD flat fee"; the overage rate, 10 cents a
# stream, is this test's).
@pytest.mark.parametrize(
    ("quantity", "cents"), [(0, 20000), (1, 20000), (1000, 20000), (1001, 20010), (1500, 25000)]
)
def test_flat_fee_and_overages(quantity: int, cents: int) -> None:
    tiers = (TierInput(1000, flat_amount=20000), TierInput("inf", unit_amount=10))
    assert cost(tiered("graduated", tiers), quantity) == cents


# https://docs.stripe.com/billing/subscriptions/usage-based-v1/use-cases/flat-fee-and-overages
# (usage 0-1000: 0 USD, 1000+: 0.04 USD)
@pytest.mark.parametrize(("quantity", "cents"), [(0, 0), (1000, 0), (1001, 4), (3000, 8000)])
def test_free_allowance_then_overage(quantity: int, cents: int) -> None:
    tiers = (TierInput(1000, unit_amount=0), TierInput("inf", unit_amount=4))
    assert cost(tiered("graduated", tiers), quantity) == cents


# https://stripe.com/docs/billing/subscriptions/quantity-transformation ("10 USD for every 5
# users (or portion thereof)": divide_by=5, round=up, unit_amount=1000)
@pytest.mark.parametrize(
    ("users", "packages", "cents"),
    [(0, 0, 0), (1, 1, 1000), (3, 1, 1000), (5, 1, 1000), (6, 2, 2000), (7, 2, 2000)],
)
def test_quantity_transformation_rounds_up(users: int, packages: int, cents: int) -> None:
    charged = pricing.charge(packaged(1000, 5, "up"), Decimal(users))
    assert (charged.quantity, charged.amount) == (Decimal(packages), Decimal(cents))


# https://docs.stripe.com/billing/subscriptions/usage-based/transform-quantities ("If a customer
# rents the car for 150 minutes, that customer is charged 30 USD for 3 hours"); rounding down
# bills only the 2 whole hours.
@pytest.mark.parametrize(("rounding", "cents"), [("up", 3000), ("down", 2000)])
def test_car_rental_minutes_billed_by_the_hour(rounding: Rounding, cents: int) -> None:
    assert cost(packaged(1000, 60, rounding), 150) == cents


@pytest.mark.parametrize(
    ("minutes", "down", "up"), [(0, 0, 0), (59, 0, 1), (60, 1, 1), (61, 1, 2), ("60.5", 1, 2)]
)
def test_transform_usage_rounding(minutes: int | str, down: int, up: int) -> None:
    quantity = Decimal(minutes)
    assert pricing.transformed(quantity, TransformUsage(60, "down")) == down
    assert pricing.transformed(quantity, TransformUsage(60, "up")) == up
    assert pricing.transformed(quantity, None) == quantity


# https://stripe.com/docs/billing/subscriptions/decimal-amounts ("0.05 * 30 = 1.5, which is
# then rounded up to 2 cents"; "amount_decimal = 105.5 in USD to represent 105.5 cents")
@pytest.mark.parametrize(
    ("amount_decimal", "quantity", "exact", "rounded"),
    [("0.05", 30, "1.5", 2), ("105.5", 1, "105.5", 106), ("0.05", 1, "0.05", 0)],
)
def test_decimal_amounts_round_at_the_line(
    amount_decimal: str, quantity: int, exact: str, rounded: int
) -> None:
    charged = pricing.charge(plan(amount_decimal=amount_decimal), Decimal(quantity))
    assert charged.amount == Decimal(exact)
    assert charged.rounded == rounded


@pytest.mark.parametrize(
    ("amount", "rounded"),
    [("0", 0), ("2.4999", 2), ("2.5", 3), ("3.5", 4), ("2.5000001", 3), ("7", 7)],
)
def test_rounded_is_half_up_not_half_even(amount: str, rounded: int) -> None:
    assert Charge(Decimal(1), Decimal(amount)).rounded == rounded


@pytest.mark.parametrize(
    ("mode", "quantity", "cents"),
    [
        ("graduated", "5.5", "3825"),
        ("graduated", "0.25", "175"),
        ("volume", "5.5", "3575"),
        ("volume", "0.25", "175"),
        ("volume", "10.001", "6000.6"),
    ],
)
def test_fractional_quantities(mode: TiersMode, quantity: str, cents: str) -> None:
    assert cost(tiered(mode, TYPOGRAPHIC_TIERS), quantity) == Decimal(cents)


def test_fractional_quantity_per_unit() -> None:
    assert cost(plan(amount_decimal="0.5"), "2.25") == Decimal("1.125")


@pytest.mark.parametrize("mode", ["graduated", "volume"])
def test_first_tier_flat_amount_is_charged_at_zero_usage(mode: TiersMode) -> None:
    tiers = (
        TierInput(10, unit_amount=100, flat_amount=1000),
        TierInput("inf", unit_amount=50, flat_amount=500),
    )
    assert cost(tiered(mode, tiers), 0) == 1000


@pytest.mark.parametrize("mode", ["graduated", "volume"])
def test_zero_usage_without_a_first_flat_amount_costs_nothing(mode: TiersMode) -> None:
    tiers = (TierInput(10, unit_amount=100), TierInput("inf", flat_amount=500))
    assert cost(tiered(mode, tiers), 0) == 0


@pytest.mark.parametrize(
    ("quantity", "cents"), [(0, 100), (5, 100), ("5.5", "1100.5"), (6, 1101), (8, 1103)]
)
def test_graduated_flat_amount_once_a_tier_is_entered(
    quantity: int | str, cents: int | str
) -> None:
    tiers = (TierInput(5, flat_amount=100), TierInput("inf", unit_amount=1, flat_amount=1000))
    assert cost(tiered("graduated", tiers), quantity) == Decimal(cents)


@pytest.mark.parametrize(("quantity", "cents"), [(1, 1010), (10, 1100), (11, 5110), (200, 6000)])
def test_volume_flat_amount_of_the_one_tier(quantity: int, cents: int) -> None:
    tiers = (
        TierInput(10, unit_amount=10, flat_amount=1000),
        TierInput(100, unit_amount=10, flat_amount=5000),
        TierInput("inf", unit_amount=5, flat_amount=5000),
    )
    assert cost(tiered("volume", tiers), quantity) == cents


def test_decimal_tier_amounts() -> None:
    tiers = (
        TierInput(100, unit_amount_decimal="0.125", flat_amount_decimal="99.5"),
        TierInput("inf", unit_amount_decimal="0.0625"),
    )
    assert cost(tiered("graduated", tiers), 200) == Decimal("99.5") + 100 * Decimal("0.1875")
    assert cost(tiered("volume", tiers), 200) == 200 * Decimal("0.0625")


@pytest.mark.parametrize(
    ("quantity", "index"), [(0, 0), (5, 0), ("5.0001", 1), (10, 1), (11, 2), (10**9, 2)]
)
def test_tier_of(quantity: int | str, index: int) -> None:
    tiers = tiered("volume", TYPOGRAPHIC_TIERS).tiers
    assert pricing.tier_of(tiers, Decimal(quantity)) is tiers[index]


def test_tier_of_needs_an_unbounded_last_tier() -> None:
    with pytest.raises(ValueError, match="unbounded"):
        pricing.tier_of((Tier(up_to=5, unit_amount=Decimal(1)),), Decimal(6))


def test_negative_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        pricing.charge(plan(amount=1), Decimal(-1))


def test_charge_is_exact_before_the_cent_rounding() -> None:
    amount, quantity = Decimal("1.171130298757"), Decimal("1054183.724313469107")
    with localcontext() as exact:
        exact.prec = 100
        product = amount * quantity
    assert product == Decimal("1234586.499999999999999999999999")
    charged = pricing.charge(plan(amount_decimal=str(amount)), quantity)
    assert (charged.amount, charged.rounded) == (product, 1234586)


# Properties, each checked against a count made without pricing.py.

AMOUNT_DECIMALS = st.integers(0, 12).flatmap(
    lambda places: st.decimals(min_value=0, max_value=10_000, places=places)
)
AMOUNT = st.one_of(st.none(), st.integers(0, 100_000), AMOUNT_DECIMALS.map(lambda d: f"{d:f}"))


@st.composite
def tier_input(draw: st.DrawFn, up_to: int | str) -> TierInput:
    unit, flat = draw(st.tuples(AMOUNT, AMOUNT).filter(lambda pair: pair != (None, None)))
    return TierInput(
        up_to,
        unit_amount=unit if isinstance(unit, int) else None,
        unit_amount_decimal=unit if isinstance(unit, str) else None,
        flat_amount=flat if isinstance(flat, int) else None,
        flat_amount_decimal=flat if isinstance(flat, str) else None,
    )


@st.composite
def tier_inputs(draw: st.DrawFn) -> list[TierInput]:
    bounds: list[int | str] = [*sorted(draw(st.sets(st.integers(1, 40), max_size=4))), "inf"]
    return [draw(tier_input(up_to)) for up_to in bounds]


QUANTITY = st.integers(0, 3).flatmap(
    lambda places: st.decimals(min_value=0, max_value=60, places=places)
)
STEP = st.sampled_from([Decimal("-0.001"), Decimal(0), Decimal("0.001")])


@st.composite
def tiers_and_quantities(draw: st.DrawFn, count: int) -> tuple[list[TierInput], list[Decimal]]:
    """Tiers, and quantities of which about half sit on or right beside a tier's ``up_to``."""
    tiers = draw(tier_inputs())
    bounds = [Decimal(tier.up_to) for tier in tiers if tier.up_to != "inf"]
    near = st.sampled_from(bounds or [Decimal(0)]).flatmap(
        lambda bound: STEP.map(lambda step: max(Decimal(0), bound + step))
    )
    return tiers, draw(st.lists(st.one_of(QUANTITY, near), min_size=count, max_size=count))


def unit_of(tier: TierInput) -> Decimal:
    return Decimal(
        tier.unit_amount if tier.unit_amount is not None else tier.unit_amount_decimal or 0
    )


def flat_of(tier: TierInput) -> Decimal:
    return Decimal(
        tier.flat_amount if tier.flat_amount is not None else tier.flat_amount_decimal or 0
    )


def holding(tiers: list[TierInput], quantity: Decimal) -> int:
    """Index of the tier whose range (previous up_to, up_to] holds ``quantity``; 0 holds 0."""
    lower = Decimal(0)
    for index, tier in enumerate(tiers):
        upper = None if tier.up_to == "inf" else Decimal(tier.up_to)
        if quantity == 0 or (lower < quantity and (upper is None or quantity <= upper)):
            return index
        assert upper is not None
        lower = upper
    raise AssertionError("the last tier is unbounded")


@settings(max_examples=200)
@given(tiers_and_quantities(2))
def test_graduated_never_decreases(drawn: tuple[list[TierInput], list[Decimal]]) -> None:
    tiers, quantities = drawn
    low, high = sorted(quantities)
    priced = tiered("graduated", tiers)
    assert cost(priced, low) <= cost(priced, high)


@settings(max_examples=200)
@given(tiers_and_quantities(1))
def test_volume_prices_everything_at_the_tier_holding_the_quantity(
    drawn: tuple[list[TierInput], list[Decimal]],
) -> None:
    tiers, [quantity] = drawn
    priced = tiered("volume", tiers)
    index = holding(tiers, quantity)
    assert pricing.tier_of(priced.tiers, quantity) is priced.tiers[index]
    assert cost(priced, quantity) == quantity * unit_of(tiers[index]) + flat_of(tiers[index])


@settings(max_examples=200)
@given(tier_inputs(), st.integers(0, 60))
def test_graduated_equals_a_unit_by_unit_sum(tiers: list[TierInput], quantity: int) -> None:
    held = [holding(tiers, Decimal(n)) for n in range(1, quantity + 1)]
    expected = sum((unit_of(tiers[index]) for index in held), Decimal(0))
    expected += sum((flat_of(tiers[index]) for index in set(held) or {0}), Decimal(0))
    assert cost(tiered("graduated", tiers), quantity) == expected


@settings(max_examples=200)
@given(
    scaled=st.integers(0, 10**12),
    places=st.integers(0, 6),
    divide_by=st.integers(1, 10**6),
    rounding=st.sampled_from(["up", "down"]),
    amount=st.one_of(
        st.integers(0, 10**6),
        st.integers(0, 6).flatmap(
            lambda places: st.decimals(min_value=0, max_value=10_000, places=places)
        ),
    ),
)
def test_transform_usage_is_integer_division(
    scaled: int, places: int, divide_by: int, rounding: Rounding, amount: int | Decimal
) -> None:
    quantity = Decimal(scaled).scaleb(-places)
    divisor = divide_by * 10**places
    packages = -(-scaled // divisor) if rounding == "up" else scaled // divisor
    priced = plan(
        amount=amount if isinstance(amount, int) else None,
        amount_decimal=f"{amount:f}" if isinstance(amount, Decimal) else None,
        transform_usage=TransformUsage(divide_by, rounding),
    )
    assert pricing.charge(priced, quantity) == (packages, packages * Decimal(amount))
