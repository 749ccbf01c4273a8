"""Meter events: what a submission must hold to count, and the problems that stop it.

One rule set for every way in. v2 answers a problem synchronously with its own code; v1 and the
stream accept the event and report the problem asynchronously (API-NOTES Part A), so each
problem carries both spellings.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from meterd.metering import values
from meterd.metering.meters import Meter
from meterd.scope import Scope

Origin = Literal["v1", "v2", "stream"]

PAST_WINDOW_SECONDS = 35 * 86400
FUTURE_WINDOW_SECONDS = 5 * 60
IDENTIFIER_TTL_SECONDS = 24 * 3600
CANCEL_WINDOW_SECONDS = 24 * 3600


class IdempotentWrite(msgspec.Struct, frozen=True):
    """What to keep under the caller's Idempotency-Key if the event is accepted.

    Stored in the same transaction as the event, so an event request with a key costs no
    more commits than one without.
    """

    key: str
    fingerprint: str
    body: bytes


class EventSubmission(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One event as a request handed it over, after its shape was checked."""

    scope: Scope
    event_name: str
    identifier: str
    payload: dict[str, str]
    timestamp: int
    created: int
    origin: Origin
    idempotency: IdempotentWrite | None = None


class Problem(msgspec.Struct, frozen=True):
    """Why an accepted event cannot count: the error-report code and the v2 error code."""

    code: str
    v2_code: str
    message: str


class Counted(msgspec.Struct, frozen=True, gc=False):
    """An event that counts toward ``meter``; ``value`` is scaled by 10^12 (None for count)."""

    meter: Meter
    customer: str
    value: int | None


def no_meter(event_name: str) -> Problem:
    return Problem(
        "no_meter", "no_meter", f"No active meter was found for the event name '{event_name}'."
    )


def assess(event: EventSubmission, meter: Meter | None, now: int) -> Counted | Problem:
    """The first rule the event breaks, checked in Stripe's order, or how it counts."""
    if meter is None:
        return no_meter(event.event_name)
    if meter.status != "active":
        return Problem(
            "archived_meter",
            "archived_meter",
            f"The meter {meter.id} for event name '{event.event_name}' is inactive; "
            "the meter must be active to submit events.",
        )
    if event.timestamp < now - PAST_WINDOW_SECONDS:
        return Problem(
            "timestamp_too_far_in_past",
            "timestamp_too_far_in_past",
            f"The timestamp {event.timestamp} is more than 35 days in the past.",
        )
    if event.timestamp > now + FUTURE_WINDOW_SECONDS:
        return Problem(
            "timestamp_in_future",
            "timestamp_in_future",
            f"The timestamp {event.timestamp} is more than 5 minutes in the future.",
        )
    customer = event.payload.get(meter.customer_key)
    if not customer:
        return Problem(
            "meter_event_no_customer_defined",
            "payload_no_customer_defined",
            f"The payload must have a reference to the customer in '{meter.customer_key}'.",
        )
    if meter.formula == "count":
        return Counted(meter, customer, None)
    raw = event.payload.get(meter.value_key)
    if raw is None:
        return Problem(
            "meter_event_invalid_value",
            "payload_no_value_defined",
            f"The payload must have a value in '{meter.value_key}'.",
        )
    try:
        value = values.parse_value(raw)
    except values.ValueTooManyDigits:
        return Problem(
            "meter_event_value_too_many_digits",
            "payload_invalid_value",
            f"The value '{raw}' has too many digits: at most {values.SIGNIFICANT_DIGITS} "
            f"significant digits and {values.FRACTION_DIGITS} after the decimal point.",
        )
    except values.InvalidValue:
        return Problem(
            "meter_event_invalid_value",
            "payload_invalid_value",
            f"The value '{raw}' in '{meter.value_key}' must be a non-negative number.",
        )
    return Counted(meter, customer, value)
