"""The embedded SQLite store: WAL, foreign keys, a busy timeout, one connection on one thread.

SQLite allows one writer at a time, so every call runs on a single worker thread that owns the
connection; the event loop never blocks on the database. Identifiers of counted events are
looked up through in-memory indexes (:class:`RecentIdentifiers`), rebuilt at start-up.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from meterd.keys import ApiKey
from meterd.metering.events import IDENTIFIER_TTL_SECONDS
from meterd.metering.meters import Meter
from meterd.metering.rollups import Rollup
from meterd.storage import migrations
from meterd.storage.base import EventTransaction, identifier_hash
from meterd.storage.sql_store import SQLStore, find_api_key, prune_identifier_log
from meterd.storage.sqlite_events import (
    DeferredRollups,
    RecentIdentifiers,
    SQLiteEventTransaction,
    register_functions,
)
from meterd.storage.wal_sync import SyncFailed, WalSync

T = TypeVar("T")
W = TypeVar("W")

_ANY_DEFERRED = "SELECT EXISTS (SELECT 1 FROM deferred_rollups)"

ARRIVAL_ORDER_MARGIN_SECONDS = 600
"""Raw events are in arrival order only give or take a commit: identifiers are kept this much
longer than 24 hours, and lookups check the exact age."""


class SQLiteStore(SQLStore):
    """:class:`meterd.storage.base.Store` on a SQLite file (or ``:memory:``)."""

    def __init__(self, path: str, index_identifiers: bool = True) -> None:
        super().__init__()
        self.path = path
        self.index_identifiers = index_identifiers
        """False when another process writes the events (:mod:`meterd.ingest.writer_process`):
        the index would take memory and start-up time and never be used here."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meterd-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._identifiers = RecentIdentifiers()
        self._deferred = DeferredRollups()
        self._reader: sqlite3.Connection | None = None
        self._wal: WalSync | None = None
        """Set when the database is a file in WAL mode (see :mod:`meterd.storage.wal_sync`)."""

    @property
    def wal(self) -> WalSync | None:
        """The fsyncs of the write-ahead log, for a file in WAL mode (see :mod:`wal_sync`)."""
        return self._wal

    @classmethod
    async def open(cls, path: str, index_identifiers: bool = True) -> SQLiteStore:
        store = cls(path, index_identifiers)
        await store._run(store._connect)
        return store

    async def close(self) -> None:
        await self._run(self._disconnect)
        self._executor.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        """Read right here, on a reader connection of its own: every request looks its key up
        (so a revoked key is refused at once), and a lookup by primary index takes
        microseconds, less than handing it to a thread; WAL lets it read beside the writer."""
        if self._reader is None:
            self._reader = sqlite3.connect(self.path, check_same_thread=False)
            self._reader.execute("PRAGMA busy_timeout = 5000")
        return find_api_key(self._reader, secret_hash)

    # connection and transactions ---------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        assert self._conn is not None, "store is closed"
        yield self._conn

    @contextmanager
    def _tx(self, sync: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction, durable when it returns; with ``sync=False`` the caller makes
        it durable (:meth:`transact_each` hands its answers to :class:`WalSync`)."""
        conn = self._conn
        assert conn is not None, "store is closed"
        wal = self._wal
        if wal is not None and wal.failure is not None:
            raise wal.failure
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if sync and wal is not None:
            wal.sync()

    async def transact_each(
        self,
        take: Callable[[], W | None],
        work: Callable[[EventTransaction, W], T],
        done: Callable[[W, T | None, BaseException | None], None],
    ) -> None:
        """Group commits whose fsync runs beside the next commit (see :mod:`wal_sync`):
        ``done`` is called on the syncing thread once the commit is on the disk."""
        wal = self._wal
        if wal is None:
            return await super().transact_each(take, work, done)

        def run() -> None:
            while True:
                unit = take()
                if unit is None:
                    # Return only once every answer is out (answers make new requests).
                    if wal.drain():
                        continue
                    return
                try:
                    with self._tx(sync=False) as conn:
                        tx = self._event_transaction(conn)
                        result = work(tx, unit)
                except Exception as exc:
                    done(unit, None, exc)
                    continue
                self._committed(tx)
                wal.after_sync(partial(_answer_synced, done, unit, result))

        await self._run(run)

    def _event_transaction(self, conn: sqlite3.Connection) -> SQLiteEventTransaction:
        return SQLiteEventTransaction(conn, self._identifiers, self._deferred)

    def _committed(self, tx: EventTransaction) -> None:
        assert isinstance(tx, SQLiteEventTransaction)
        self._identifiers.take(tx)
        self._deferred.took(tx)

    async def read_rollups(
        self, meter: Meter, customer: str, spans: Sequence[tuple[int, int, int]]
    ) -> list[tuple[int, int, Rollup]]:
        """The rows are read in one snapshot in which no range of raw events waits for its
        rollups; any that wait are folded first. The snapshot, not this process's
        :class:`DeferredRollups`, says what waits: another process on the same file
        (``meterd serve`` beside ``meterd usage``) may defer a range at any time."""

        def run() -> list[tuple[int, int, Rollup]]:
            conn = self._conn
            assert conn is not None
            while True:
                conn.execute("BEGIN")
                try:
                    if not conn.execute(_ANY_DEFERRED).fetchone()[0]:
                        return self._rollup_rows(conn, meter, customer, spans)
                finally:
                    conn.execute("COMMIT")
                with self._tx() as locked:
                    tx = self._event_transaction(locked)
                    tx.fold_deferred_rollups()
                self._committed(tx)

        return await self._run(run)

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode == "wal":
            # WalSync makes the fsync that FULL would make inside COMMIT.
            conn.execute("PRAGMA synchronous = NORMAL")
            self._wal = WalSync(self.path)
        else:
            conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        register_functions(conn)
        self._conn = conn
        self._migrate()
        if self.index_identifiers:
            self._load_identifiers()
        waiting = conn.execute(
            "SELECT coalesce(sum(end_seq - first_seq), 0) FROM deferred_rollups"
        ).fetchone()
        self._deferred.events = int(waiting[0])
        self._deferred.since = time.monotonic()

    def _load_identifiers(self) -> None:
        """Rebuild the in-memory identifier indexes: the raw events of the last 24 hours (and
        a margin), and the identifier log (pruned to the same age)."""
        assert self._conn is not None
        since = int(time.time()) - IDENTIFIER_TTL_SECONDS - ARRIVAL_ORDER_MARGIN_SECONDS
        counted = self._conn.execute(
            "SELECT e.seq, m.account_id, m.livemode, e.identifier FROM meter_events e "
            "JOIN meters m ON m.seq = e.meter_seq WHERE e.seq >= ? ORDER BY e.seq",
            (self._first_event_since(since),),
        )
        logged = self._conn.execute(
            "SELECT seq, account_id, livemode, identifier FROM event_identifier_log ORDER BY seq"
        )
        for cursor, index in (
            (counted, self._identifiers.counted),
            (logged, self._identifiers.uncounted),
        ):
            while rows := cursor.fetchmany(100_000):
                index.add(
                    [identifier_hash(row[1], bool(row[2]), row[3]) for row in rows],
                    [row[0] for row in rows],
                )

    def _first_event_since(self, since: int) -> int:
        """The first raw event created after ``since``, found by bisecting the sequence: raw
        events are appended in arrival order (give or take a commit, hence the margin the
        callers leave), and an index on ``created`` would cost every insert."""
        assert self._conn is not None
        low, high = self._conn.execute(
            "SELECT coalesce(min(seq), 1), coalesce(max(seq), 0) + 1 FROM meter_events"
        ).fetchone()
        while low < high:
            middle = (low + high) // 2
            row = self._conn.execute(
                "SELECT seq, created FROM meter_events WHERE seq >= ? ORDER BY seq LIMIT 1",
                (middle,),
            ).fetchone()
            if row is None or row[1] > since:
                high = middle
            else:
                low = row[0] + 1
        return int(low)

    def _disconnect(self) -> None:
        if self._wal is not None:
            self._wal.close()
        if self._conn is not None:
            self._conn.execute("PRAGMA optimize")
            self._conn.close()
            self._conn = None

    def _migrate(self) -> None:
        with self._tx() as conn:
            migrations.apply(conn, "sqlite", conn.execute)

    def schema_version(self) -> int:
        assert self._conn is not None
        row = self._conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    # identifiers -------------------------------------------------------------------------

    async def prune_event_identifiers(self, before: int) -> int:
        """Forget identifiers received at or before ``before``: the log's records
        (:func:`prune_identifier_log`), and the in-memory indexes' entries."""

        def run() -> int:
            with self._tx() as conn:
                bound, deleted = prune_identifier_log(conn, before)
            self._identifiers.uncounted.drop_below(bound)
            first = self._first_event_since(before - ARRIVAL_ORDER_MARGIN_SECONDS)
            return int(deleted) + self._identifiers.counted.drop_below(first)

        return await self._run(run)


def _answer_synced(
    done: Callable[[W, T | None, BaseException | None], None],
    unit: W,
    result: T,
    failure: SyncFailed | None,
) -> None:
    if failure is None:
        done(unit, result, None)
    else:
        done(unit, None, failure)
