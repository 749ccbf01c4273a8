"""Error reports: the v2 thin events that tell a sender which accepted events cannot count.

Stripe validates v1 and stream events after accepting them and reports problems as
``v1.billing.meter.error_report_triggered`` (the event name has a meter) or
``v1.billing.meter.no_meter_found`` events. meterd groups problems per (scope, event name,
one-minute validation window) and keeps a few sample errors with their identifiers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from meterd.metering.meters import Meter

ERROR_REPORT_TRIGGERED = "v1.billing.meter.error_report_triggered"
NO_METER_FOUND = "v1.billing.meter.no_meter_found"
EVENT_TYPES = (ERROR_REPORT_TRIGGERED, NO_METER_FOUND)
VALIDATION_WINDOW_SECONDS = 60
SAMPLES_PER_CODE = 5


class SampleError(msgspec.Struct):
    error_message: str
    identifier: str


class ErrorType(msgspec.Struct):
    code: str
    error_count: int = 0
    samples: list[SampleError] = []


class ErrorReport(msgspec.Struct, kw_only=True):
    """One report: the problems of one event name in one validation window."""

    id: str
    account_id: str
    livemode: bool
    type: str
    event_name: str
    meter_id: str | None
    window_start: int
    created: int
    error_types: list[ErrorType] = []

    def add(self, code: str, message: str, identifier: str) -> None:
        entry = next((t for t in self.error_types if t.code == code), None)
        if entry is None:
            entry = ErrorType(code)
            self.error_types.append(entry)
        entry.error_count += 1
        if len(entry.samples) < SAMPLES_PER_CODE:
            entry.samples.append(SampleError(message, identifier))


def report_type(meter: Meter | None) -> str:
    return NO_METER_FOUND if meter is None else ERROR_REPORT_TRIGGERED


def window_of(received: int) -> int:
    return received - received % VALIDATION_WINDOW_SECONDS


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def event_object(report: ErrorReport) -> dict[str, Any]:
    """The ``v2.core.event`` the official SDK parses into its typed error-report event."""
    total = sum(t.error_count for t in report.error_types)
    if report.meter_id is None:
        summary = f"{total} meter event(s) for event name '{report.event_name}' had no meter."
    else:
        summary = f"{total} meter event(s) for meter {report.meter_id} could not be counted."
    body: dict[str, Any] = {
        "id": report.id,
        "object": "v2.core.event",
        "type": report.type,
        "created": rfc3339(report.created),
        "livemode": report.livemode,
        "context": None,
        "reason": None,
        "data": {
            "developer_message_summary": summary,
            "reason": {
                "error_count": total,
                "error_types": [
                    {
                        "code": t.code,
                        "error_count": t.error_count,
                        "sample_errors": [
                            {
                                "error_message": s.error_message,
                                "request": {"identifier": s.identifier},
                            }
                            for s in t.samples
                        ],
                    }
                    for t in report.error_types
                ],
            },
            "validation_start": rfc3339(report.window_start),
            "validation_end": rfc3339(report.window_start + VALIDATION_WINDOW_SECONDS),
        },
    }
    if report.meter_id is not None:
        body["related_object"] = {
            "id": report.meter_id,
            "type": "billing.meter",
            "url": f"/v1/billing/meters/{report.meter_id}",
        }
    return body
