"""A plan (Stripe's legacy v1 price) and the cross-field rules that decide what is valid.

Types, lengths and enums are checked when a request is decoded; what depends on several
fields at once lives here, each rule raising the 400 Stripe gives, naming the param.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Literal, NamedTuple

import msgspec

from meterd import ids
from meterd.billing import amounts
from meterd.errors import InvalidRequestError
from meterd.metering.meters import Meter
from meterd.scope import Scope

Interval = Literal["day", "month", "week", "year"]
BillingScheme = Literal["per_unit", "tiered"]
TiersMode = Literal["graduated", "volume"]
UsageType = Literal["licensed", "metered"]
Rounding = Literal["down", "up"]

MAX_INTERVAL_COUNT: dict[str, int] = {"year": 3, "month": 36, "week": 156, "day": 1095}
"""Stripe: at most three years between billings (3 years, 36 months or 156 weeks); for days,
three years of 365 days."""
MAX_TRIAL_PERIOD_DAYS = 730
PLAN_ID_LENGTH = 24
INFINITY = "inf"


class Tier(msgspec.Struct, frozen=True):
    """One pricing tier; ``up_to`` None is the last tier, up to infinity."""

    up_to: int | None
    unit_amount: Decimal | None = None
    flat_amount: Decimal | None = None


class TransformUsage(msgspec.Struct, frozen=True):
    divide_by: int
    round: Rounding


class Plan(msgspec.Struct, kw_only=True):
    id: str
    account_id: str
    livemode: bool
    active: bool = True
    amount: Decimal | None = None
    billing_scheme: BillingScheme = "per_unit"
    currency: str
    interval: Interval
    interval_count: int = 1
    metadata: dict[str, str] = {}
    meter: str | None = None
    nickname: str | None = None
    product: str
    tiers: tuple[Tier, ...] = ()
    tiers_mode: TiersMode | None = None
    transform_usage: TransformUsage | None = None
    trial_period_days: int | None = None
    usage_type: UsageType = "licensed"
    created: int


class TierInput(NamedTuple):
    """One tier as a request gives it: ``up_to`` is an integer or ``"inf"``."""

    up_to: int | str
    unit_amount: int | None = None
    unit_amount_decimal: str | None = None
    flat_amount: int | None = None
    flat_amount_decimal: str | None = None


class PlanInput(msgspec.Struct, kw_only=True):
    """What a create request says, after decoding; defaults are Stripe's."""

    id: str | None = None
    active: bool = True
    amount: int | None = None
    amount_decimal: str | None = None
    billing_scheme: BillingScheme = "per_unit"
    currency: str
    interval: Interval
    interval_count: int = 1
    metadata: dict[str, str] = {}
    meter: str | None = None
    nickname: str | None = None
    tiers: Sequence[TierInput] | None = None
    tiers_mode: TiersMode | None = None
    transform_usage: TransformUsage | None = None
    trial_period_days: int | None = None
    usage_type: UsageType = "licensed"


def new_id() -> str:
    """``price_`` and 24 base62 characters: Stripe answers plan creation with a price id."""
    return "price_" + ids.random_base62(PLAN_ID_LENGTH)


def new_plan(scope: Scope, given: PlanInput, *, product: str, now: int) -> Plan:
    """The plan a create request describes, or the first rule it breaks (400).

    The meter is checked separately (:func:`check_meter`): it needs a read of the store.
    """
    _check_interval(given.interval, given.interval_count)
    check_trial_period_days(given.trial_period_days)
    _check_usage_type(given.usage_type, given.meter)
    if given.billing_scheme == "per_unit":
        amount = _unit_amount(given)
        tiers: tuple[Tier, ...] = ()
        if given.transform_usage is not None:
            _check_count(given.transform_usage.divide_by, "transform_usage[divide_by]")
    else:
        amount = None
        tiers = _tiers(given)
    return Plan(
        id=given.id or new_id(),
        account_id=scope.account_id,
        livemode=scope.livemode,
        active=given.active,
        amount=amount,
        billing_scheme=given.billing_scheme,
        currency=given.currency,
        interval=given.interval,
        interval_count=given.interval_count,
        metadata=given.metadata,
        meter=given.meter,
        nickname=given.nickname or None,
        product=product,
        tiers=tiers,
        tiers_mode=given.tiers_mode,
        transform_usage=given.transform_usage,
        trial_period_days=given.trial_period_days,
        usage_type=given.usage_type,
        created=now,
    )


def check_meter(meter_id: str, meter: Meter | None) -> None:
    """A metered plan needs an existing, active meter of the same account and mode."""
    if meter is None:
        raise InvalidRequestError(
            f"No such meter: '{meter_id}'", param="meter", code="resource_missing"
        )
    if meter.status != "active":
        raise InvalidRequestError(
            f"The meter '{meter_id}' is inactive. A metered plan needs an active meter: "
            "reactivate it, or use another one.",
            param="meter",
        )


def check_trial_period_days(days: int | None) -> None:
    if days is None:
        return
    if days < 0:
        raise InvalidRequestError(
            "This value must be greater than or equal to 0.", param="trial_period_days"
        )
    if days > MAX_TRIAL_PERIOD_DAYS:
        raise InvalidRequestError(
            f"The maximum number of trial period days is {MAX_TRIAL_PERIOD_DAYS} (2 years).",
            param="trial_period_days",
        )


def _check_interval(interval: str, count: int) -> None:
    if count < 1:
        raise InvalidRequestError(
            "This value must be greater than or equal to 1.", param="interval_count"
        )
    if count > MAX_INTERVAL_COUNT[interval]:
        raise InvalidRequestError(
            "The maximum billing interval is three years (3 years, 36 months, 156 weeks or "
            f"1095 days); interval_count={count} with interval={interval} is longer.",
            param="interval_count",
        )


def _check_usage_type(usage_type: UsageType, meter: str | None) -> None:
    if usage_type == "metered" and meter is None:
        raise InvalidRequestError(
            "A metered plan requires a `meter`: the billing meter that records its usage.",
            param="meter",
        )
    if usage_type == "licensed" and meter is not None:
        raise InvalidRequestError(
            "A `meter` can only be set when `usage_type=metered`.", param="meter"
        )


def _unit_amount(given: PlanInput) -> Decimal:
    if given.tiers is not None:
        raise InvalidRequestError(
            "Tiers can only be set when `billing_scheme=tiered`.", param="tiers"
        )
    if given.tiers_mode is not None:
        raise InvalidRequestError(
            "A tiers_mode can only be set when `billing_scheme=tiered`.", param="tiers_mode"
        )
    amount = _one_amount(given.amount, given.amount_decimal, "amount", "amount_decimal")
    if amount is None:
        raise InvalidRequestError(
            "Plans require an `amount` parameter to be set when `billing_scheme=per_unit`.",
            param="amount",
        )
    return amount


def _tiers(given: PlanInput) -> tuple[Tier, ...]:
    for name in ("amount", "amount_decimal"):
        if getattr(given, name) is not None:
            raise InvalidRequestError(
                f"`{name}` cannot be set when `billing_scheme=tiered`: each tier has its own "
                "amounts.",
                param=name,
            )
    if given.transform_usage is not None:
        raise InvalidRequestError(
            "transform_usage cannot be combined with tiers.", param="transform_usage"
        )
    if not given.tiers:
        raise InvalidRequestError(
            "Plans require `tiers` to be set when `billing_scheme=tiered`.", param="tiers"
        )
    if given.tiers_mode is None:
        raise InvalidRequestError(
            "Plans require `tiers_mode` to be set when `billing_scheme=tiered`.",
            param="tiers_mode",
        )
    tiers = []
    previous = 0
    last = len(given.tiers) - 1
    for index, sent in enumerate(given.tiers):
        param = f"tiers[{index}]"
        up_to = _up_to(sent.up_to, f"{param}[up_to]")
        if up_to is None and index != last:
            raise InvalidRequestError(
                "Only the last tier can have `up_to` set to `inf`.", param=f"{param}[up_to]"
            )
        if up_to is not None and index == last:
            raise InvalidRequestError(
                "The last tier must have `up_to` set to `inf`.", param=f"{param}[up_to]"
            )
        if up_to is not None:
            if up_to <= previous:
                raise InvalidRequestError(
                    "Each tier's `up_to` must be greater than the previous tier's.",
                    param=f"{param}[up_to]",
                )
            previous = up_to
        unit = _one_amount(
            sent.unit_amount,
            sent.unit_amount_decimal,
            f"{param}[unit_amount]",
            f"{param}[unit_amount_decimal]",
        )
        flat = _one_amount(
            sent.flat_amount,
            sent.flat_amount_decimal,
            f"{param}[flat_amount]",
            f"{param}[flat_amount_decimal]",
        )
        if unit is None and flat is None:
            raise InvalidRequestError(
                "Each tier needs a unit amount or a flat amount: set one of unit_amount, "
                "unit_amount_decimal, flat_amount or flat_amount_decimal.",
                param=param,
            )
        tiers.append(Tier(up_to=up_to, unit_amount=unit, flat_amount=flat))
    return tuple(tiers)


def _up_to(sent: int | str, param: str) -> int | None:
    if sent == INFINITY:
        return None
    if isinstance(sent, str):
        if not sent.isdigit() or not sent.isascii():
            raise InvalidRequestError(
                f"Invalid integer: {sent[:40]}; `up_to` is an integer or `inf`.", param=param
            )
        sent = int(sent)
    _check_count(sent, param)
    return sent


def _check_count(value: int, param: str) -> None:
    """A positive count that fits a signed 64-bit integer (tier bounds, ``divide_by``)."""
    if value < 1:
        raise InvalidRequestError("This value must be greater than or equal to 1.", param=param)
    if value > amounts.MAX_AMOUNT:
        raise amounts.too_large(str(value), param)


def _one_amount(
    integer: int | None, decimal: str | None, integer_param: str, decimal_param: str
) -> Decimal | None:
    if integer is not None and decimal is not None:
        raise InvalidRequestError(
            f"You may only specify one of these parameters: {integer_param}, {decimal_param}.",
            code="parameters_exclusive",
        )
    if integer is not None:
        return amounts.from_integer(integer, integer_param)
    if decimal is not None:
        return amounts.from_decimal_string(decimal, decimal_param)
    return None
