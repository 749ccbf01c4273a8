"""What a quantity of usage costs under a plan, exactly, in the currency's minor unit.

- ``per_unit``: the quantity (divided and rounded by ``transform_usage``, if set) times the
  amount.
- ``tiered`` + ``graduated``: each tier prices the units that fall in it, plus its flat amount
  once any unit does.
- ``tiered`` + ``volume``: every unit is priced at the one tier the whole quantity falls in,
  plus that tier's flat amount.

The first tier is always entered, so its flat amount is charged even for no usage (a base
fee), in both tier modes. Amounts stay exact decimals until the very end, where the total is
rounded half up to a whole minor unit, as Stripe rounds an invoice line.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import NamedTuple

from meterd.billing.amounts import EXACT
from meterd.billing.plans import Plan, Tier, TransformUsage

ZERO = Decimal(0)


class Charge(NamedTuple):
    quantity: Decimal
    """The usage priced (after ``transform_usage``)."""
    amount: Decimal
    """Exact, in the minor unit (cents for usd); may have decimal places."""

    @property
    def rounded(self) -> int:
        """The amount an invoice line would show: half up to a whole minor unit."""
        return int(self.amount.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=EXACT))


def charge(plan: Plan, quantity: Decimal) -> Charge:
    """The cost of ``quantity`` (>= 0) units of usage under ``plan``."""
    if quantity < 0:
        raise ValueError(f"quantity must not be negative, got {quantity}")
    with localcontext(EXACT):
        return _charge(plan, quantity)


def _charge(plan: Plan, quantity: Decimal) -> Charge:
    if plan.billing_scheme == "per_unit":
        assert plan.amount is not None
        billed = transformed(quantity, plan.transform_usage)
        return Charge(billed, billed * plan.amount)
    if plan.tiers_mode == "volume":
        return Charge(quantity, volume(plan.tiers, quantity))
    return Charge(quantity, graduated(plan.tiers, quantity))


def transformed(quantity: Decimal, transform: TransformUsage | None) -> Decimal:
    """Usage divided by ``divide_by`` and rounded to a whole number (Stripe's
    transform_usage); unchanged without one."""
    if transform is None:
        return quantity
    with localcontext(EXACT):
        whole, rest = divmod(quantity, transform.divide_by)
        return whole + 1 if rest and transform.round == "up" else whole


def graduated(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    total = ZERO
    lower = ZERO
    for index, tier in enumerate(tiers):
        if index > 0 and quantity <= lower:
            break
        upper = quantity if tier.up_to is None else min(quantity, Decimal(tier.up_to))
        total += _tier_cost(tier, max(upper - lower, ZERO))
        if tier.up_to is None:
            break
        lower = Decimal(tier.up_to)
    return total


def volume(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    return _tier_cost(tier_of(tiers, quantity), quantity)


def tier_of(tiers: tuple[Tier, ...], quantity: Decimal) -> Tier:
    """The tier whose range holds ``quantity``: the first with ``up_to >= quantity``."""
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return tier
    raise ValueError("tiers must end with an unbounded tier")


def _tier_cost(tier: Tier, units: Decimal) -> Decimal:
    return units * (tier.unit_amount or ZERO) + (tier.flat_amount or ZERO)
