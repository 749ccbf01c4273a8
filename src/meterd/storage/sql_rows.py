"""Rows as both SQL stores read them back: column lists and row-to-object mappers."""

from __future__ import annotations

from typing import Any

import msgspec

from meterd.metering.error_reports import ErrorReport, ErrorType
from meterd.metering.meters import Meter
from meterd.metering.rollups import Rollup
from meterd.storage.base import RawEvent

METER_COLUMNS = (
    "id, account_id, livemode, display_name, event_name, formula, customer_key, value_key, "
    "event_time_window, status, deactivated_at, created, updated"
)
REPORT_COLUMNS = "id, account_id, livemode, type, event_name, meter_id, window_start, created, data"
EVENT_COLUMNS = (
    "seq, meter_seq, customer, ts, value, identifier, created, recount_bucket, cancelled"
)

_error_types = msgspec.json.Decoder(list[ErrorType])


def raw_from_row(row: Any) -> RawEvent:
    return RawEvent(
        seq=row[0],
        meter_seq=row[1],
        customer=row[2],
        ts=row[3],
        value=None if row[4] is None else int(row[4]),
        identifier=row[5],
        created=row[6],
        recount_bucket=row[7],
        cancelled=bool(row[8]),
    )


def scaled(stored: int | str | None) -> int:
    """A stored scaled value (an integer, or its decimal text past 62 bits); 0 for count."""
    return 0 if stored is None else int(stored)


def rollup_from_row(row: Any) -> Rollup:
    return Rollup(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


def report_from_row(row: Any) -> ErrorReport:
    return ErrorReport(
        id=row[0],
        account_id=row[1],
        livemode=bool(row[2]),
        type=row[3],
        event_name=row[4],
        meter_id=row[5],
        window_start=row[6],
        created=row[7],
        error_types=_error_types.decode(row[8]),
    )


def meter_from_row(row: Any) -> Meter:
    return Meter(
        id=row[0],
        account_id=row[1],
        livemode=bool(row[2]),
        display_name=row[3],
        event_name=row[4],
        formula=row[5],
        customer_key=row[6],
        value_key=row[7],
        event_time_window=row[8],
        status=row[9],
        deactivated_at=row[10],
        created=row[11],
        updated=row[12],
    )
