"""The parts of an event transaction both SQL stores write the same way.

Each backend's transaction class (:mod:`meterd.storage.sqlite_events`,
:mod:`meterd.storage.postgres_events`) adds what differs: how identifiers are found and kept,
how a batch of raw events is appended, and how rollups are summed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from meterd.metering.error_reports import ErrorReport
from meterd.metering.meters import Meter
from meterd.metering.rollups import Rollup, RollupKey, StoredEvent
from meterd.scope import Scope
from meterd.storage.base import IdempotentResponse, RawEvent
from meterd.storage.sql_rows import (
    EVENT_COLUMNS,
    METER_COLUMNS,
    REPORT_COLUMNS,
    meter_from_row,
    raw_from_row,
    report_from_row,
    rollup_from_row,
    scaled,
)
from meterd.storage.sql_store import meter_by_event_name

ROLLUP_VALUES = "event_count, total, latest_ts, latest_seq, latest_value"


class SQLEventTransaction:
    """The portable half of :class:`meterd.storage.base.EventTransaction` (``?`` placeholders;
    the PostgreSQL connection adapter translates them)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def meter_by_event_name(self, scope: Scope, event_name: str) -> tuple[Meter, int] | None:
        return meter_by_event_name(self.conn, scope, event_name)

    def meter_by_seq(self, meter_seq: int) -> Meter:
        row = self.conn.execute(
            f"SELECT {METER_COLUMNS} FROM meters WHERE seq = ?", (meter_seq,)
        ).fetchone()
        return meter_from_row(row)

    def meter_seqs(self) -> dict[int, Meter]:
        rows = self.conn.execute(f"SELECT seq, {METER_COLUMNS} FROM meters").fetchall()
        return {row[0]: meter_from_row(row[1:]) for row in rows}

    def event(self, seq: int) -> RawEvent:
        row = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM meter_events WHERE seq = ?", (seq,)
        ).fetchone()
        return raw_from_row(row)

    def cancel_event(self, seq: int) -> None:
        self.conn.execute("UPDATE meter_events SET cancelled = TRUE WHERE seq = ?", (seq,))

    def bucket_events(self, meter_seq: int, customer: str, bucket: int) -> list[StoredEvent]:
        rows = self.conn.execute(
            "SELECT seq, customer, ts, value FROM meter_events WHERE meter_seq = ? "
            "AND customer = ? AND recount_bucket = ? AND NOT cancelled ORDER BY seq",
            (meter_seq, customer, bucket),
        ).fetchall()
        return [StoredEvent(r[0], r[1], r[2], scaled(r[3])) for r in rows]

    def rollup_range(
        self, meter_seq: int, customer: str, size: int, first: int, end: int
    ) -> list[Rollup]:
        rows = self.conn.execute(
            f"SELECT {ROLLUP_VALUES} FROM meter_rollups WHERE meter_seq = ? AND customer = ? "
            "AND size = ? AND bucket >= ? AND bucket < ?",
            (meter_seq, customer, size, first, end),
        ).fetchall()
        return [rollup_from_row(row) for row in rows]

    def idempotency_record(self, scope: Scope, key: str) -> IdempotentResponse | None:
        row = self.conn.execute(
            "SELECT fingerprint, created, status, body FROM idempotency_keys "
            "WHERE account_id = ? AND livemode = ? AND key = ?",
            (scope.account_id, scope.livemode, key),
        ).fetchone()
        if row is None:
            return None
        return IdempotentResponse(fingerprint=row[0], created=row[1], status=row[2], body=row[3])

    def put_idempotency_records(
        self, rows: Sequence[tuple[Scope, str, IdempotentResponse]]
    ) -> None:
        self.conn.executemany(
            "INSERT INTO idempotency_keys "
            "(account_id, livemode, key, fingerprint, created, status, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, livemode, key) DO UPDATE SET "
            "fingerprint = excluded.fingerprint, created = excluded.created, "
            "status = excluded.status, body = excluded.body",
            [
                (s.account_id, s.livemode, key, r.fingerprint, r.created, r.status, r.body)
                for s, key, r in rows
            ],
        )

    def error_report(
        self, scope: Scope, type: str, event_name: str, window_start: int
    ) -> ErrorReport | None:
        row = self.conn.execute(
            f"SELECT {REPORT_COLUMNS} FROM error_reports WHERE account_id = ? AND livemode = ? "
            "AND type = ? AND event_name = ? AND window_start = ?",
            (scope.account_id, scope.livemode, type, event_name, window_start),
        ).fetchone()
        return report_from_row(row) if row else None

    def put_error_report(self, report: ErrorReport) -> None:
        data = msgspec.json.encode(report.error_types).decode()
        updated = self.conn.execute(
            "UPDATE error_reports SET data = ? WHERE id = ?", (data, report.id)
        ).rowcount
        if not updated:
            self.conn.execute(
                f"INSERT INTO error_reports ({REPORT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    report.id,
                    report.account_id,
                    report.livemode,
                    report.type,
                    report.event_name,
                    report.meter_id,
                    report.window_start,
                    report.created,
                    data,
                ),
            )

    def truncate_rollups(self) -> None:
        self.conn.execute("DELETE FROM meter_rollups")

    def all_rollups(self) -> dict[RollupKey, Rollup]:
        rows = self.conn.execute(
            f"SELECT meter_seq, customer, size, bucket, {ROLLUP_VALUES} FROM meter_rollups"
        ).fetchall()
        return {RollupKey(*row[:4]): rollup_from_row(row[4:]) for row in rows}

    def all_events(self, after_seq: int, limit: int) -> list[RawEvent]:
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM meter_events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [raw_from_row(row) for row in rows]

    def put_rollups(self, rows: dict[RollupKey, Rollup | None]) -> None:
        upserts = [
            (
                *key,
                r.count,
                self.db_int(r.total),
                r.latest_ts,
                r.latest_seq,
                self.db_int(r.latest_value),
            )
            for key, r in rows.items()
            if r is not None
        ]
        self.conn.executemany(
            "INSERT INTO meter_rollups (meter_seq, customer, size, bucket, "
            f"{ROLLUP_VALUES}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (meter_seq, customer, size, bucket) DO UPDATE SET "
            "event_count = excluded.event_count, total = excluded.total, "
            "latest_ts = excluded.latest_ts, latest_seq = excluded.latest_seq, "
            "latest_value = excluded.latest_value",
            upserts,
        )
        self.conn.executemany(
            "DELETE FROM meter_rollups "
            "WHERE meter_seq = ? AND customer = ? AND size = ? AND bucket = ?",
            [key for key, r in rows.items() if r is None],
        )

    def db_int(self, value: int) -> Any:
        """A scaled value as this database keeps it (PostgreSQL: NUMERIC takes any integer)."""
        return value
