"""PostgreSQL's side of event ingestion.

Several meterd processes may write events to one database at once. Each event transaction
first takes one transaction-level advisory lock (:data:`EVENTS_LOCK`), so that event writes
take turns across processes exactly as SQLite's single writer does: checking an identifier and
recording it, allocating sequence numbers, and read-modify-write rollups (cancellations,
windowed meters) are then safe without retries. Everything else (parsing, validation, reads,
meters, idempotency) runs in parallel. Identifiers of the last 24 hours, counted or not, are
rows of ``event_identifier_log`` found by index, since no process's memory sees them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meterd.metering.rollups import DAY, HOUR, MINUTE, Rollup, RollupKey
from meterd.scope import Scope
from meterd.storage.base import IdentifierRecord, NewEvent, Reservation
from meterd.storage.sql_events import ROLLUP_VALUES, SQLEventTransaction

EVENTS_LOCK = 0x6D65746572640001
"""The advisory lock every event transaction holds until it commits ("meterd" + 1)."""


class PostgresEventTransaction(SQLEventTransaction):
    """:class:`meterd.storage.base.EventTransaction` over an open PostgreSQL transaction
    (``conn`` is a :class:`meterd.storage.postgres.PgConnection`)."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        conn.execute("SELECT pg_advisory_xact_lock(?)", (EVENTS_LOCK,))
        self.tracked = False
        """Whether an appended event belongs to a meter whose rollups keep the latest event."""

    def received_identifiers(
        self, scope: Scope, identifiers: Sequence[str], since: int
    ) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT identifier, max(received) FROM event_identifier_log "
            "WHERE account_id = ? AND livemode = ? AND identifier = ANY(?) AND received > ? "
            "GROUP BY identifier",
            (scope.account_id, scope.livemode, list(identifiers), since),
        ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def identifier(self, scope: Scope, identifier: str) -> IdentifierRecord | None:
        row = self.conn.execute(
            "SELECT received, event_seq, uncounted_event_name FROM event_identifier_log "
            "WHERE account_id = ? AND livemode = ? AND identifier = ? "
            "ORDER BY received DESC, seq DESC LIMIT 1",
            (scope.account_id, scope.livemode, identifier),
        ).fetchone()
        return IdentifierRecord(int(row[0]), row[1], row[2]) if row else None

    def reserve_identifiers(self, rows: Sequence[Reservation]) -> None:
        if not rows:
            return
        with self.conn.copy(
            "COPY event_identifier_log (account_id, livemode, identifier, received, "
            "event_seq, uncounted_event_name) FROM STDIN"
        ) as copy:
            for r in rows:
                copy.write_row((r.scope.account_id, r.scope.livemode, *r[1:]))

    def next_event_seq(self) -> int:
        return int(self.conn.execute("SELECT nextval('meter_events_seq')").fetchone()[0])

    def may_have_seen(self, hashes: Sequence[int]) -> bool:
        """Always "maybe": identifier hashes are per process, so the batch takes the path that
        looks its identifiers up in the database."""
        return True

    def append_events(
        self, first_seq: int, events: Sequence[NewEvent], hashes: Sequence[int] | None = None
    ) -> None:
        """COPY the raw rows, and their identifiers into the log; the sequence is moved past
        the numbers used (the advisory lock keeps them from anyone else meanwhile)."""
        if not events:
            return
        with self.conn.copy(
            "COPY meter_events (seq, meter_seq, customer, ts, value, identifier, created, "
            "recount_bucket) FROM STDIN"
        ) as copy:
            for seq, e in enumerate(events, start=first_seq):
                copy.write_row((seq, *e[:7]))
        with self.conn.copy(
            "COPY event_identifier_log (account_id, livemode, identifier, received, event_seq) "
            "FROM STDIN"
        ) as copy:
            for seq, e in enumerate(events, start=first_seq):
                copy.write_row((e[7], e[8], e[4], e[5], seq))
        self.tracked = self.tracked or any(e[6] is not None for e in events)
        last = first_seq + len(events) - 1
        self.conn.execute("SELECT setval('meter_events_seq', ?)", (last,))

    def add_event_rollups(self, first_seq: int, end_seq: int, total: int) -> None:
        """One pass over the batch into per-minute groups (a temporary table), then one upsert
        per rollup size from those few rows. The latest event of each group is only worked out
        when the batch holds events of meters that keep it."""
        self.conn.execute(_BATCH_MINUTES)
        fill = _FILL_MINUTES_TRACKED if self.tracked else _FILL_MINUTES
        self.conn.execute(fill, (first_seq, end_seq))
        for size in (MINUTE, HOUR, DAY):
            self.conn.execute(_MERGE_MINUTES % {"size": size})

    def merge_rollups(self, deltas: dict[RollupKey, Rollup], windowed: set[int]) -> None:
        added: list[tuple[object, ...]] = []
        replaced: list[tuple[object, ...]] = []
        for key, r in deltas.items():
            row = (*key, r.count, r.total, r.latest_ts, r.latest_seq, r.latest_value)
            (replaced if key.meter_seq in windowed else added).append(row)
        insert = (
            "INSERT INTO meter_rollups AS r (meter_seq, customer, size, bucket, "
            f"{ROLLUP_VALUES}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (meter_seq, customer, size, bucket) DO UPDATE SET "
        )
        if added:
            self.conn.executemany(
                insert + "event_count = r.event_count + excluded.event_count, "
                f"total = r.total + excluded.total, {_LATEST}",
                added,
            )
        if replaced:
            self.conn.executemany(
                insert + f"event_count = excluded.event_count, total = CASE WHEN {_NEWER} "
                f"THEN excluded.total ELSE r.total END, {_LATEST}",
                replaced,
            )


_NEWER = "(excluded.latest_ts, excluded.latest_seq) > (r.latest_ts, r.latest_seq)"
_LATEST = (
    f"latest_ts = CASE WHEN {_NEWER} THEN excluded.latest_ts ELSE r.latest_ts END, "
    f"latest_seq = CASE WHEN {_NEWER} THEN excluded.latest_seq ELSE r.latest_seq END, "
    f"latest_value = CASE WHEN {_NEWER} THEN excluded.latest_value ELSE r.latest_value END"
)

_BATCH_MINUTES = (
    "CREATE TEMP TABLE IF NOT EXISTS batch_minutes (meter_seq BIGINT, customer TEXT, "
    "bucket BIGINT, n BIGINT, total NUMERIC, latest_ts BIGINT, latest_seq BIGINT, "
    "latest_value NUMERIC) ON COMMIT DELETE ROWS"
)
_FILL_MINUTES = (
    "INSERT INTO batch_minutes SELECT meter_seq, customer, ts - ts % 60, count(*), "
    "coalesce(sum(value), 0), 0, 0, 0 FROM meter_events WHERE seq >= ? AND seq < ? "
    "GROUP BY meter_seq, customer, ts - ts % 60"
)
_FILL_MINUTES_TRACKED = (
    "INSERT INTO batch_minutes SELECT meter_seq, customer, ts - ts % 60, count(*), "
    "coalesce(sum(value), 0), "
    "CASE WHEN max(recount_bucket) IS NULL THEN 0 "
    "ELSE (array_agg(ts ORDER BY ts DESC, seq DESC))[1] END, "
    "CASE WHEN max(recount_bucket) IS NULL THEN 0 "
    "ELSE (array_agg(seq ORDER BY ts DESC, seq DESC))[1] END, "
    "CASE WHEN max(recount_bucket) IS NULL THEN 0 "
    "ELSE (array_agg(coalesce(value, 0) ORDER BY ts DESC, seq DESC))[1] END "
    "FROM meter_events WHERE seq >= ? AND seq < ? GROUP BY meter_seq, customer, ts - ts % 60"
)
_MERGE_MINUTES = (
    "INSERT INTO meter_rollups AS r (meter_seq, customer, size, bucket, event_count, total, "
    "latest_ts, latest_seq, latest_value) "
    "SELECT meter_seq, customer, %(size)s, bucket - bucket %% %(size)s, sum(n), sum(total), "
    "(array_agg(latest_ts ORDER BY latest_ts DESC, latest_seq DESC))[1], "
    "(array_agg(latest_seq ORDER BY latest_ts DESC, latest_seq DESC))[1], "
    "(array_agg(latest_value ORDER BY latest_ts DESC, latest_seq DESC))[1] "
    "FROM batch_minutes GROUP BY meter_seq, customer, bucket - bucket %% %(size)s "
    "ON CONFLICT (meter_seq, customer, size, bucket) DO UPDATE SET "
    "event_count = r.event_count + excluded.event_count, total = r.total + excluded.total, "
    f"{_LATEST}"
)
"""Minute groups folded into one rollup size. ``%%`` survives the size substitution as ``%``,
which the connection adapter doubles again for psycopg. Untracked groups carry (0, 0, 0) as
their latest event, which is never newer than a stored one: their rows keep latest_* = 0."""
