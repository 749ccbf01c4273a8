"""What a customer's metered usage costs under a plan over a period, read from a store.

The engine behind ``meterd usage``: the meter's aggregate for the customer (the same rollups
and rules that answer ``event_summaries``), priced by :mod:`meterd.billing.pricing`.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from meterd.billing import amounts, currencies, pricing
from meterd.billing.plans import Plan
from meterd.errors import InvalidRequestError
from meterd.metering import summaries
from meterd.metering.meters import Meter
from meterd.scope import Scope
from meterd.storage import Store


class UsageProblem(Exception):
    """The question cannot be answered (no such plan, not metered, a bad period)."""


class UsageReport(msgspec.Struct, kw_only=True):
    plan: str
    meter: str
    formula: str
    customer: str
    start: int
    end: int
    currency: str
    quantity: Decimal
    """The meter's aggregate for the customer over [start, end)."""
    billed_quantity: Decimal
    """The quantity priced: after ``transform_usage``, if the plan has one."""
    amount_decimal: Decimal
    """Exact, in the currency's minor unit."""
    amount: int
    """Rounded half up to a whole minor unit, as an invoice line would be."""

    def major_units(self) -> str:
        """The rounded amount in the currency's major unit: ``12.35`` for 1235 usd cents."""
        digits = currencies.minor_unit_digits(self.currency)
        return f"{Decimal(self.amount).scaleb(-digits):.{digits}f}"


async def metered_usage(
    store: Store, scope: Scope, plan_id: str, customer: str, start: int, end: int
) -> UsageReport:
    try:
        summaries.check_range(start, end, None)
    except InvalidRequestError as exc:
        message = exc.message.replace("start_time", "--start").replace("end_time", "--end")
        raise UsageProblem(message) from None
    plan = await store.get_plan(scope, plan_id)
    mode = "live" if scope.livemode else "test"
    if plan is None:
        raise UsageProblem(f"No such plan: '{plan_id}' (account {scope.account_id}, {mode} mode)")
    if plan.meter is None:
        raise UsageProblem(
            f"Plan '{plan_id}' is licensed, not metered: it has no meter to read usage from."
        )
    meter = await store.get_meter(scope, plan.meter)
    if meter is None:
        raise UsageProblem(f"No such meter: '{plan.meter}' (plan '{plan_id}' names it)")
    quantity = await _aggregate(store, meter, customer, start, end)
    return report(plan, meter, customer, start, end, quantity)


def report(
    plan: Plan, meter: Meter, customer: str, start: int, end: int, quantity: Decimal
) -> UsageReport:
    charge = pricing.charge(plan, quantity)
    return UsageReport(
        plan=plan.id,
        meter=meter.id,
        formula=meter.formula,
        customer=customer,
        start=start,
        end=end,
        currency=plan.currency,
        quantity=amounts.normalized(quantity),
        billed_quantity=amounts.normalized(charge.quantity),
        amount_decimal=amounts.normalized(charge.amount),
        amount=charge.rounded,
    )


async def _aggregate(store: Store, meter: Meter, customer: str, start: int, end: int) -> Decimal:
    window = (start, end)
    spans = summaries.spans_for(meter, [window], grouped=False)
    found = await store.read_rollups(meter, customer, spans)
    row = summaries.per_window(meter, [window], found)[window]
    return Decimal(summaries.aggregated_value(meter, row))
