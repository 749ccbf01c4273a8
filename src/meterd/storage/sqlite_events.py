"""SQLite's side of event ingestion: the unit-of-work methods the ingest layer calls.

Everything here runs on the store's one writer thread inside a transaction it opened.
Scaled integers that do not fit in 64 bits are kept as text (see ``_db_int``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter

import msgspec

from meterd.metering.rollups import DAY, HOUR, MINUTE, SQL_SUM_LIMIT, Rollup, RollupKey
from meterd.scope import Scope
from meterd.storage.base import (
    IdentifierRecord,
    NewEvent,
    Reservation,
    identifier_hash,
)
from meterd.storage.identifier_index import IdentifierIndex
from meterd.storage.sql_events import ROLLUP_VALUES, SQLEventTransaction


class RecentIdentifiers:
    """The identifiers of the last 24 hours, by hash, for dedup and cancellation.

    Counted events are found through their raw rows (``meter_events.seq``); events that only
    raised an error report through the identifier log (``event_identifier_log.seq``). Both
    indexes live in memory and are rebuilt from the database at start-up, so that no B-tree
    over random identifiers is written on every insert (see the stream issue).
    """

    def __init__(self) -> None:
        self.counted = IdentifierIndex()
        self.uncounted = IdentifierIndex()

    def take(self, tx: SQLiteEventTransaction) -> None:
        """After ``tx`` committed: index what it wrote."""
        for hashes, rows in tx.appended:
            self.counted.add(hashes, rows)
        for hashes, rows in tx.logged:
            self.uncounted.add(hashes, rows)


FOLD_SECONDS = 0.1
"""How long rollups may wait for a batch's events (reads never see them wait). A fold stalls
the writer for its batch: with hour and day rows deferred, folding every 0.5 s gave 4% more
events/s than every 0.1 s at 32 connections, and twice the p99 latency (86 against 42 ms)."""

FOLD_EVENTS = 1 << 20
"""How many events they may wait for: bounds the time one fold takes."""

_FOLD_CHUNK_EVENTS = 1 << 23
"""Events folded by one statement at most: :data:`_LATEST_KEY` numbers them in 24 bits."""


class DeferredRollups:
    """Whether rollups are waiting for ranges of raw events (the ``deferred_rollups`` table),
    shared by the store's transactions.

    A batch appends its raw rows and records their range; about every :data:`FOLD_SECONDS`
    the waiting ranges are folded into their minute, hour and day rows in one statement. A
    batch's upserts are per (meter, customer, minute) group, and a group gathers many more
    events over a tenth of a second than in one batch: with 1,000 customers, the writer alone
    (bench/ingest_writer.py) spent 0.77 µs an event on rollups in batches of 1,600 events (the
    stream's at 32 connections) and 0.59 in batches of 3,200, against 3.34 and 1.87 when each
    batch upserted its own. Everything that reads or rewrites rollup rows folds first
    (:meth:`SQLiteEventTransaction.fold_deferred_rollups`), so nothing outside the writer sees
    a row that waits. Changed only after a transaction commits (:meth:`took`).
    """

    def __init__(self) -> None:
        self.events = 0
        """Events in the waiting ranges (none wait when 0)."""
        self.since = 0.0
        """When the oldest waiting range committed (``time.monotonic``)."""

    def took(self, tx: SQLiteEventTransaction) -> None:
        """After ``tx`` committed: what it folded and what it deferred."""
        if tx.folded:
            self.events = 0
        if tx.deferred_events:
            if not self.events:
                self.since = time.monotonic()
            self.events += tx.deferred_events


class SQLiteEventTransaction(SQLEventTransaction):
    """:class:`meterd.storage.base.EventTransaction` over an open SQLite transaction."""

    def __init__(
        self, conn: sqlite3.Connection, identifiers: RecentIdentifiers, deferred: DeferredRollups
    ) -> None:
        super().__init__(conn)
        self.identifiers = identifiers
        self.deferred = deferred
        self.deferred_events = 0
        """Events whose rollups this transaction deferred (and has not folded)."""
        self.folded = False
        """Every range deferred before this transaction has been folded in it."""
        self.appended: list[tuple[list[int], range]] = []
        """Identifier hashes of the counted events appended here, with their sequence numbers:
        the index takes them after COMMIT (see :meth:`RecentIdentifiers.take`)."""
        self.logged: list[tuple[list[int], range]] = []
        """The same for uncounted events, with their identifier log rows."""

    def received_identifiers(
        self, scope: Scope, identifiers: Sequence[str], since: int
    ) -> dict[str, int]:
        found: dict[str, int] = {}
        for record in self._logged(scope, identifiers):
            if record[1] > since and record[1] > found.get(record[0], since):
                found[record[0]] = record[1]
        return found

    def identifier(self, scope: Scope, identifier: str) -> IdentifierRecord | None:
        records = self._logged(scope, [identifier])
        if not records:
            return None
        latest = records[-1]
        return IdentifierRecord(latest[1], latest[2], latest[3])

    def _logged(
        self, scope: Scope, identifiers: Sequence[str]
    ) -> list[tuple[str, int, int | None, str | None]]:
        """Records of ``identifiers`` in ``scope``, oldest first: (identifier, received,
        event_seq, uncounted_event_name). A counted event's record is its raw row; an
        uncounted one's is in the identifier log. The in-memory indexes may return rows of
        other identifiers with the same hash; they are filtered out here."""
        account, livemode = scope.account_id, scope.livemode
        hashes = [identifier_hash(account, livemode, i) for i in identifiers]
        counted = self.identifiers.counted.lookup(hashes)
        uncounted = self.identifiers.uncounted.lookup(hashes)
        if not counted and not uncounted:
            return []
        records: list[tuple[str, int, int | None, str | None]] = []
        if counted:
            records += self.conn.execute(
                "SELECT e.identifier, e.created, e.seq, NULL FROM meter_events e "
                "JOIN meters m ON m.seq = e.meter_seq "
                "WHERE e.seq IN (SELECT value FROM json_each(?)) "
                "AND m.account_id = ? AND m.livemode = ?",
                (_json([row for found in counted.values() for row in found]), account, livemode),
            ).fetchall()
        if uncounted:
            records += self.conn.execute(
                "SELECT identifier, received, event_seq, uncounted_event_name FROM "
                "event_identifier_log WHERE seq IN (SELECT value FROM json_each(?)) "
                "AND account_id = ? AND livemode = ?",
                (_json([row for found in uncounted.values() for row in found]), account, livemode),
            ).fetchall()
        wanted = {identifiers[position] for position in (*counted, *uncounted)}
        return sorted(
            (tuple(row) for row in records if row[0] in wanted),  # type: ignore[misc]
            key=lambda record: record[1],
        )

    def reserve_identifiers(self, rows: Sequence[Reservation]) -> None:
        if not rows:
            return
        first = self._next_log_seq()
        self.conn.execute(
            "INSERT INTO event_identifier_log (seq, account_id, livemode, identifier, "
            "received, event_seq, uncounted_event_name) SELECT ? + key, value ->> 0, "
            "value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 FROM json_each(?)",
            (first, _json([(r.scope.account_id, r.scope.livemode, *r[1:]) for r in rows])),
        )
        self.logged.append(
            (
                [identifier_hash(r.scope.account_id, r.scope.livemode, r.identifier) for r in rows],
                range(first, first + len(rows)),
            )
        )

    def _next_log_seq(self) -> int:
        found = self.conn.execute("SELECT max(seq) FROM event_identifier_log").fetchone()
        return int(found[0] or 0) + 1

    def next_event_seq(self) -> int:
        row = self.conn.execute("SELECT max(seq) FROM meter_events").fetchone()
        return int(row[0] or 0) + 1

    def may_have_seen(self, hashes: Sequence[int]) -> bool:
        if len(set(hashes)) != len(hashes):
            return True
        return bool(self.identifiers.counted.lookup(hashes)) or bool(
            self.identifiers.uncounted.lookup(hashes)
        )

    def append_events(
        self, first_seq: int, events: Sequence[NewEvent], hashes: Sequence[int] | None = None
    ) -> None:
        """Rows in multi-row INSERTs of bound parameters, 1,024 rows each, then 256, 64 and 16,
        and the last few as one INSERT over ``json_each`` of those rows encoded by msgspec.

        Every statement gives the GIL up while SQLite runs it and waits to get it back from a
        busy event loop (up to the switch interval), so a batch must take few statements:
        bound rows cost SQLite least (1.2-1.5 µs an event) but one statement size each, JSON
        text any number of rows but 2.4 µs an event for parsing it. With 1,024-row blocks and
        JSON for the rest, a batch of 1,600 (the stream's at 32 connections) cost 1.17 µs an
        event to append; with the smaller blocks, 0.75 (bench/ingest_writer.py --batch 1600).
        The raw row is the identifier's record too: a counted event writes nothing else for
        its dedup.
        """
        if not events:
            return
        rows: Sequence[tuple[object, ...]] = events
        if any(e[3] is not None and not -_HALF_INT64 < e[3] < _HALF_INT64 for e in events):
            rows = [(*e[:3], None if e[3] is None else db_int(e[3]), *e[4:]) for e in events]
        done = 0
        for size, insert in _INSERT_EVENT_BLOCKS:
            blocks = (len(rows) - done) // size
            if not blocks:
                continue
            end = done + blocks * size
            columns = list(chain.from_iterable(map(_EVENT_FIELDS, rows[done:end])))
            width = size * _EVENT_WIDTH
            for block in range(blocks):
                self.conn.execute(insert, columns[block * width : (block + 1) * width])
            done = end
        if done < len(rows):
            self.conn.execute(_INSERT_EVENTS_JSON, (first_seq + done, _json(rows[done:])))
        if hashes is None:
            hashes = [identifier_hash(e[7], e[8], e[4]) for e in events]
        self.appended.append((list(hashes), range(first_seq, first_seq + len(events))))

    def add_event_rollups(self, first_seq: int, end_seq: int, total: int) -> None:
        """Record the range; it is folded with the others (see :class:`DeferredRollups`)."""
        self.conn.execute(
            "INSERT INTO deferred_rollups (first_seq, end_seq, total) VALUES (?, ?, ?)",
            (first_seq, end_seq, total),
        )
        self.deferred_events += end_seq - first_seq
        state = self.deferred
        if state.events + self.deferred_events >= FOLD_EVENTS or (
            state.events and time.monotonic() - state.since >= FOLD_SECONDS
        ):
            self.fold_deferred_rollups()

    def fold_deferred_rollups(self) -> None:
        """Bring the rollups of every deferred range up to date."""
        ranges = self.conn.execute(
            "SELECT first_seq, end_seq, total FROM deferred_rollups ORDER BY first_seq"
        ).fetchall()
        for first, end in _fold_chunks(ranges):
            self.conn.execute(_ADD_EVENT_ROLLUPS, (first, end))
        if ranges:
            self.conn.execute("DELETE FROM deferred_rollups")
        self.folded = True
        self.deferred_events = 0

    def _fold_first(self) -> None:
        """Before rollup rows are read or rewritten: no range may be waiting. The table is
        asked, not just :class:`DeferredRollups`: another process (``meterd usage`` beside
        ``meterd serve``) may have deferred a range since this one last looked."""
        if self.deferred_events or not self.folded:
            self.fold_deferred_rollups()

    def rollup_range(
        self, meter_seq: int, customer: str, size: int, first: int, end: int
    ) -> list[Rollup]:
        self._fold_first()
        return super().rollup_range(meter_seq, customer, size, first, end)

    def put_rollups(self, rows: dict[RollupKey, Rollup | None]) -> None:
        self._fold_first()
        super().put_rollups(rows)

    def all_rollups(self) -> dict[RollupKey, Rollup]:
        self._fold_first()
        return super().all_rollups()

    def truncate_rollups(self) -> None:
        super().truncate_rollups()
        self.conn.execute("DELETE FROM deferred_rollups")
        self.folded = True
        self.deferred_events = 0

    def db_int(self, value: int) -> int | str:
        return db_int(value)

    def merge_rollups(self, deltas: dict[RollupKey, Rollup], windowed: set[int]) -> None:
        """Fold each delta into its stored row in SQL, without reading rows back first.

        Unwindowed rows add counts and totals (``meterd_add``: exact, beyond 64 bits) and keep
        the latest event; a windowed meter's row is replaced by a newer event.
        """
        added: list[tuple[object, ...]] = []
        replaced: list[tuple[object, ...]] = []
        for key, r in deltas.items():
            row = (*key, r.count, db_int(r.total), r.latest_ts, r.latest_seq)
            (replaced if key.meter_seq in windowed else added).append(
                (*row, db_int(r.latest_value))
            )
        insert = (
            "INSERT INTO meter_rollups (meter_seq, customer, size, bucket, "
            f"{ROLLUP_VALUES}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (meter_seq, customer, size, bucket) DO UPDATE SET "
        )
        newer = _NEWER
        latest = (
            f"latest_ts = CASE WHEN {newer} THEN excluded.latest_ts ELSE latest_ts END, "
            f"latest_seq = CASE WHEN {newer} THEN excluded.latest_seq ELSE latest_seq END, "
            f"latest_value = CASE WHEN {newer} THEN excluded.latest_value ELSE latest_value END"
        )
        if added:
            self.conn.executemany(
                insert + "event_count = event_count + excluded.event_count, "
                f"total = {_SAFE_ADD}, {latest}",
                added,
            )
        if replaced:
            self.conn.executemany(
                insert + f"event_count = excluded.event_count, total = CASE WHEN {newer} "
                f"THEN excluded.total ELSE total END, {latest}",
                replaced,
            )


_HALF_INT64 = 2**62
_SAFE_ADD = (
    "CASE WHEN typeof(total) = 'integer' AND typeof(excluded.total) = 'integer' "
    f"AND abs(total) < {_HALF_INT64} AND abs(excluded.total) < {_HALF_INT64} "
    "THEN total + excluded.total ELSE meterd_add(total, excluded.total) END"
)
"""Native addition while it cannot overflow (SQLite would turn an overflow into a float)."""


_LATEST_KEY = "e.ts * 16777216 + (e.seq - ?1)"
"""Orders a fold's events by (timestamp, arrival) in one integer: timestamps stay below 2^38
and a fold chunk below 2^24 events. SQLite takes a row's bare columns from the row that holds the
max() of a grouped query, which gives each group's latest event without a second pass."""

_NEWER = "(excluded.latest_ts, excluded.latest_seq) > (latest_ts, latest_seq)"


_ADD_EVENT_ROLLUPS = (
    "WITH minutes AS MATERIALIZED ("
    "SELECT e.meter_seq, e.customer, e.ts - e.ts % 60 AS bucket, count(*) AS n, "
    f"coalesce(sum(e.value), 0) AS total, max({_LATEST_KEY}), "
    "CASE WHEN e.recount_bucket IS NULL THEN 0 ELSE e.ts END AS latest_ts, "
    "CASE WHEN e.recount_bucket IS NULL THEN 0 ELSE e.seq END AS latest_seq, "
    "CASE WHEN e.recount_bucket IS NULL THEN 0 ELSE coalesce(e.value, 0) END AS latest_value "
    "FROM meter_events e WHERE e.seq >= ?1 AND e.seq < ?2 "
    "GROUP BY e.meter_seq, e.customer, e.ts - e.ts % 60) "
    f"INSERT INTO meter_rollups (meter_seq, customer, size, bucket, {ROLLUP_VALUES}) "
    "SELECT m.meter_seq, m.customer, s.size, m.bucket - m.bucket % s.size, m.n, m.total, "
    "m.latest_ts, m.latest_seq, m.latest_value "
    f"FROM minutes m, (SELECT {MINUTE} AS size UNION ALL SELECT {HOUR} UNION ALL "
    f"SELECT {DAY}) s WHERE true "
    "ON CONFLICT (meter_seq, customer, size, bucket) DO UPDATE SET "
    f"event_count = event_count + excluded.event_count, total = {_SAFE_ADD}, "
    f"latest_ts = CASE WHEN {_NEWER} THEN excluded.latest_ts ELSE latest_ts END, "
    f"latest_seq = CASE WHEN {_NEWER} THEN excluded.latest_seq ELSE latest_seq END, "
    f"latest_value = CASE WHEN {_NEWER} THEN excluded.latest_value ELSE latest_value END"
)
"""Fold a range of raw events into rollups in one statement (each statement costs the writer
a GIL hand-over): one pass over its events into per-(meter, customer, minute) groups, each
with its latest event, then each group upserted into its minute, hour and day rows. Two
minutes of one hour meet in the upsert itself (SQLite applies ON CONFLICT to rows the same
statement inserted), which costs less than grouping them again first: 5.9 against 11.5 ms for
3,200 events."""


def _fold_chunks(ranges: Sequence[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Deferred ranges as few statements' ranges: adjacent ranges join while their values
    still sum in 64 bits and :data:`_LATEST_KEY` can number their events. Ranges that are not
    adjacent stay apart: the events between them were rolled up in Python."""
    chunks: list[tuple[int, int]] = []
    total = 0
    for first, end, bound in ranges:
        if (
            chunks
            and chunks[-1][1] == first
            and total + bound < SQL_SUM_LIMIT
            and end - chunks[-1][0] <= _FOLD_CHUNK_EVENTS
        ):
            chunks[-1] = (chunks[-1][0], end)
            total += bound
        else:
            chunks.append((first, end))
            total = bound
    return chunks


_INSERT_EVENTS_JSON = (
    "INSERT INTO meter_events (seq, meter_seq, customer, ts, value, identifier, created, "
    "recount_bucket) SELECT ?1 + key, value ->> 0, value ->> 1, value ->> 2, value ->> 3, "
    "value ->> 4, value ->> 5, value ->> 6 FROM json_each(?2)"
)
_EVENT_WIDTH = 7
_BLOCK_SIZES = (1024, 256, 64, 16)


def _insert_event_block(rows: int) -> str:
    return (
        "INSERT INTO meter_events (meter_seq, customer, ts, value, identifier, created, "
        "recount_bucket) VALUES (?, ?, ?, ?, ?, ?, ?)" + ", (?, ?, ?, ?, ?, ?, ?)" * (rows - 1)
    )


_INSERT_EVENT_BLOCKS = [(size, _insert_event_block(size)) for size in _BLOCK_SIZES]
"""Sequence numbers are SQLite's own in these (one more than the largest, row after row): the
writer is alone, so they run on from ``first_seq``."""
_EVENT_FIELDS = itemgetter(slice(0, _EVENT_WIDTH))
"""A :data:`NewEvent`'s columns in ``meter_events`` (the rest says whose identifier it is)."""


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def db_int(value: int) -> int | str:
    """A scaled value as SQLite keeps it: an integer, or decimal text beyond 64 bits."""
    return value if -_HALF_INT64 < value < _HALF_INT64 else str(value)


def add_scaled(a: str | int, b: str | int) -> int | str:
    """``meterd_add``: the SQL function that adds two scaled decimals exactly."""
    return db_int(int(a) + int(b))


def register_functions(conn: sqlite3.Connection) -> None:
    conn.create_function("meterd_add", 2, add_scaled, deterministic=True)
