"""The PostgreSQL store: psycopg 3 with a connection pool, for one or many meterd processes.

Every guarantee lives in the database, so that any number of processes can serve one
database: uniqueness by constraints, Idempotency-Keys claimed by one INSERT, event writes taking
turns under an advisory lock (:mod:`meterd.storage.postgres_events`), migrations applied by
whichever process gets the migration lock first. Raw events are partitioned by arrival month
(``meter_events_YYYY_MM``), created ahead of time, so old months can be dropped whole.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from meterd.storage import migrations
from meterd.storage.base import EventTransaction
from meterd.storage.open import DatabaseUnavailable, redacted
from meterd.storage.postgres_events import PostgresEventTransaction
from meterd.storage.sql_store import SQLStore, prune_identifier_log

T = TypeVar("T")

POOL_SIZE = 8
CONNECT_TIMEOUT_SECONDS = 10
MIGRATIONS_LOCK = 0x6D65746572640002
"""Session advisory lock held while one process migrates (or adds partitions)."""
UNFINISHED_CLAIM_SECONDS = 600
"""An Idempotency-Key claimed this long ago without an answer belongs to a request whose process
died: no live request takes that long. Younger claims may be another process's, in flight."""


class PgConnection:
    """A psycopg connection that takes the ``?`` placeholders the shared SQL is written with."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(_pg(sql), parameters)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        if rows:
            cursor.executemany(_pg(sql), rows)
        return cursor

    @contextmanager
    def copy(self, statement: str) -> Iterator[psycopg.Copy]:
        with self.raw.cursor() as cursor, cursor.copy(statement) as copy:
            yield copy


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStore(SQLStore):
    """:class:`meterd.storage.base.Store` on PostgreSQL (``postgresql://user@host:port/db``;
    libpq parameters such as ``?options=-csearch_path%3Dmy_schema`` pass through)."""

    def __init__(self, url: str, pool_size: int = POOL_SIZE) -> None:
        super().__init__()
        self.url = url
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            open=False,
            name="meterd",
        )
        self._executor = ThreadPoolExecutor(
            max_workers=pool_size, thread_name_prefix="meterd-postgres"
        )

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        store = cls(url)
        await store._run(store._open)
        return store

    async def close(self) -> None:
        await self._run(self._pool.close)
        self._executor.shutdown(wait=True)

    def _open(self) -> None:
        try:
            psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {redacted(self.url)}: {reason}"
            ) from None
        self._pool.open(wait=True, timeout=30)
        try:
            with self._pool.connection() as conn:
                conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATIONS_LOCK,))
                try:
                    with conn.transaction():
                        migrations.apply(PgConnection(conn), "postgresql", conn.execute)
                        add_partitions(PgConnection(conn), int(time.time()))
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS_LOCK,))
        except BaseException:
            self._pool.close()
            raise

    def schema_version(self) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
            assert row is not None
            return int(row[0] or 0)

    # connection and transactions ---------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @contextmanager
    def _connection(self) -> Iterator[PgConnection]:
        with self._pool.connection() as conn:
            yield PgConnection(conn)

    @contextmanager
    def _tx(self) -> Iterator[PgConnection]:
        with self._pool.connection() as conn, conn.transaction():
            yield PgConnection(conn)

    def _event_transaction(self, conn: PgConnection) -> EventTransaction:
        return PostgresEventTransaction(conn)

    # what differs from SQLite ------------------------------------------------------------

    async def prune_event_identifiers(self, before: int) -> int:
        def run(conn: PgConnection) -> int:
            return prune_identifier_log(conn, before)[1]

        return await self._write(run)

    async def release_unfinished_idempotency_keys(self) -> int:
        def run(conn: PgConnection) -> int:
            return conn.execute(
                "DELETE FROM idempotency_keys WHERE status IS NULL AND created <= ?",
                (int(time.time()) - UNFINISHED_CLAIM_SECONDS,),
            ).rowcount

        return await self._write(run)

    async def maintain(self, now: int) -> None:
        """Create the raw events' partitions for this month and the next."""

        def run() -> None:
            with self._pool.connection() as conn:
                conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATIONS_LOCK,))
                try:
                    with conn.transaction():
                        add_partitions(PgConnection(conn), now)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS_LOCK,))

        await self._run(run)

    async def drop_events_before(self, month_start: int, now: int | None = None) -> list[str]:
        """Drop the monthly partitions of raw events that end at or before ``month_start``,
        never the current month's or a later one (events still arrive there, and a month
        recreated after its events went to the default partition could not be); their rollups
        stay. Returns the partitions dropped."""
        bound = min(month_start, _month_start(int(time.time()) if now is None else now))

        def run() -> list[str]:
            with self._tx() as conn:
                dropped = []
                for name, upper in _partitions(conn):
                    if upper <= bound:
                        conn.execute(f"DROP TABLE {name}")
                        dropped.append(name)
                return dropped

        return await self._run(run)


def add_partitions(conn: PgConnection, now: int) -> None:
    this_month = _month_start(now)
    next_month = _month_start(this_month + 32 * 86400)
    after = _month_start(next_month + 32 * 86400)
    existing = {name for name, _ in _partitions(conn)}
    for low, high in ((this_month, next_month), (next_month, after)):
        name = "meter_events_" + dt.datetime.fromtimestamp(low, dt.UTC).strftime("%Y_%m")
        if name not in existing:
            conn.execute(
                f"CREATE TABLE {name} PARTITION OF meter_events FOR VALUES FROM ({low}) TO ({high})"
            )


def _partitions(conn: PgConnection) -> list[tuple[str, int]]:
    """The monthly partitions (not the default one), with their upper bounds."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = 'meter_events' AND p.relnamespace = c.relnamespace "
        "AND p.relnamespace = to_regnamespace(current_schema())::oid"
    ).fetchall()
    found = []
    for name, bound in rows:
        if "TO (" in bound:
            found.append((name, int(bound.rsplit("TO (", 1)[1].split(")")[0].strip("'"))))
    return sorted(found)


def _month_start(timestamp: int) -> int:
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return int(dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC).timestamp())
