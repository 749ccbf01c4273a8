"""A billing meter and its lifecycle rules (defaults, rename, deactivate, reactivate)."""

from __future__ import annotations

from typing import Literal

import msgspec

from meterd import ids
from meterd.scope import Scope

Formula = Literal["count", "sum", "last"]
EventTimeWindow = Literal["day", "hour"]
MeterStatus = Literal["active", "inactive"]

DEFAULT_CUSTOMER_KEY = "stripe_customer_id"
DEFAULT_VALUE_KEY = "value"


class Meter(msgspec.Struct, kw_only=True):
    id: str
    account_id: str
    livemode: bool
    display_name: str
    event_name: str
    formula: Formula
    customer_key: str = DEFAULT_CUSTOMER_KEY
    value_key: str = DEFAULT_VALUE_KEY
    event_time_window: EventTimeWindow | None = None
    status: MeterStatus = "active"
    deactivated_at: int | None = None
    created: int
    updated: int


def new_meter(
    scope: Scope,
    *,
    display_name: str,
    event_name: str,
    formula: Formula,
    customer_key: str | None,
    value_key: str | None,
    event_time_window: EventTimeWindow | None,
    now: int,
) -> Meter:
    return Meter(
        id=ids.object_id("mtr", scope.livemode),
        account_id=scope.account_id,
        livemode=scope.livemode,
        display_name=display_name,
        event_name=event_name,
        formula=formula,
        customer_key=customer_key or DEFAULT_CUSTOMER_KEY,
        value_key=value_key or DEFAULT_VALUE_KEY,
        event_time_window=event_time_window,
        created=now,
        updated=now,
    )


def renamed(meter: Meter, display_name: str, now: int) -> Meter:
    """Meters are immutable except for the display name (Stripe's rule)."""
    return msgspec.structs.replace(meter, display_name=display_name, updated=now)


def deactivated(meter: Meter, now: int) -> Meter:
    """An inactive meter comes back unchanged (API-NOTES Part A)."""
    if meter.status == "inactive":
        return meter
    return msgspec.structs.replace(meter, status="inactive", deactivated_at=now, updated=now)


def reactivated(meter: Meter, now: int) -> Meter:
    """An active meter comes back unchanged; reactivating clears ``deactivated_at``."""
    if meter.status == "active":
        return meter
    return msgspec.structs.replace(meter, status="active", deactivated_at=None, updated=now)
