"""The embedded SQLite store: WAL, foreign keys, a busy timeout, one connection on one thread.

SQLite allows one writer at a time, so every call runs on a single worker thread that owns the
connection; the event loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from meterd.billing.plans import Plan
from meterd.billing.products import Product
from meterd.keys import Account, ApiKey
from meterd.metering.error_reports import ErrorReport
from meterd.metering.events import IDENTIFIER_TTL_SECONDS
from meterd.metering.meters import Meter, MeterStatus
from meterd.metering.rollups import Rollup
from meterd.metering.sessions import MeterEventSession
from meterd.scope import Scope
from meterd.storage import migrations
from meterd.storage import sqlite_billing as billing
from meterd.storage.base import (
    IDEMPOTENCY_TTL_SECONDS,
    AlreadyExists,
    CursorNotFound,
    EventTransaction,
    IdempotentResponse,
    Page,
    PageRequest,
    PlanFilter,
    ProductFilter,
    ReportFilter,
    identifier_hash,
)
from meterd.storage.sqlite_events import (
    METER_COLUMNS,
    REPORT_COLUMNS,
    RecentIdentifiers,
    SQLiteEventTransaction,
    meter_from_row,
    register_functions,
    report_from_row,
    rollup_from_row,
)
from meterd.storage.sqlite_pages import keyset_page

T = TypeVar("T")
W = TypeVar("W")

ARRIVAL_ORDER_MARGIN_SECONDS = 600
"""Raw events are in arrival order only give or take a commit: identifiers are kept this much
longer than 24 hours, and lookups check the exact age."""

_KEY_COLUMNS = "id, account_id, livemode, secret_hash, last4, created, revoked_at"
_SESSION_COLUMNS = "id, account_id, livemode, token_hash, created, expires_at"


class SQLiteStore:
    """:class:`meterd.storage.base.Store` on a SQLite file (or ``:memory:``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meterd-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._meter_seqs: dict[str, int] = {}
        self._identifiers = RecentIdentifiers()

    @classmethod
    async def open(cls, path: str) -> SQLiteStore:
        store = cls(path)
        await store._run(store._connect)
        return store

    async def close(self) -> None:
        await self._run(self._disconnect)
        self._executor.shutdown(wait=True)

    # connection and transactions -------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        register_functions(conn)
        self._conn = conn
        self._migrate()
        self._load_identifiers()

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
        if self._conn is not None:
            self._conn.execute("PRAGMA optimize")
            self._conn.close()
            self._conn = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        assert conn is not None, "store is closed"
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied BIGINT NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in migrations.load("sqlite"):
                if migration.version in done:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
                    (migration.version, migration.name, int(time.time())),
                )

    def schema_version(self) -> int:
        assert self._conn is not None
        row = self._conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    # accounts and keys -----------------------------------------------------------------

    async def create_account(self, account: Account, key: ApiKey) -> None:
        def run() -> None:
            with self._tx() as conn:
                conn.execute(
                    "INSERT INTO accounts (id, created) VALUES (?, ?)",
                    (account.id, account.created),
                )
                _insert_key(conn, key)

        await self._run(run)

    async def has_accounts(self) -> bool:
        return await self.first_account() is not None

    async def first_account(self) -> Account | None:
        def run() -> Account | None:
            assert self._conn is not None
            row = self._conn.execute(
                "SELECT id, created FROM accounts ORDER BY created, id LIMIT 1"
            ).fetchone()
            return Account(id=row[0], created=row[1]) if row else None

        return await self._run(run)

    async def add_api_key(self, key: ApiKey) -> None:
        def run() -> None:
            with self._tx() as conn:
                _insert_key(conn, key)

        await self._run(run)

    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        def run() -> ApiKey | None:
            assert self._conn is not None
            row = self._conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?", (secret_hash,)
            ).fetchone()
            return _key_from_row(row) if row else None

        return await self._run(run)

    async def list_api_keys(self) -> list[ApiKey]:
        def run() -> list[ApiKey]:
            assert self._conn is not None
            rows = self._conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created, id"
            ).fetchall()
            return [_key_from_row(row) for row in rows]

        return await self._run(run)

    # meters ----------------------------------------------------------------------------

    async def insert_meter(self, meter: Meter) -> None:
        def run() -> None:
            try:
                with self._tx() as conn:
                    conn.execute(
                        f"INSERT INTO meters ({METER_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        _meter_row(meter),
                    )
            except sqlite3.IntegrityError as exc:
                if "event_name" in str(exc):
                    raise AlreadyExists("event_name") from None
                raise

        await self._run(run)

    async def get_meter(self, scope: Scope, meter_id: str) -> Meter | None:
        def run() -> Meter | None:
            assert self._conn is not None
            row = self._conn.execute(
                f"SELECT {METER_COLUMNS} FROM meters "
                "WHERE id = ? AND account_id = ? AND livemode = ?",
                (meter_id, scope.account_id, scope.livemode),
            ).fetchone()
            return meter_from_row(row) if row else None

        return await self._run(run)

    async def find_meter_by_event_name(
        self, scope: Scope, event_name: str
    ) -> tuple[Meter, int] | None:
        def run() -> tuple[Meter, int] | None:
            assert self._conn is not None
            return SQLiteEventTransaction(self._conn, self._identifiers).meter_by_event_name(
                scope, event_name
            )

        return await self._run(run)

    async def save_meter(self, meter: Meter) -> None:
        def run() -> None:
            with self._tx() as conn:
                conn.execute(
                    "UPDATE meters SET display_name = ?, status = ?, deactivated_at = ?, "
                    "updated = ? WHERE id = ? AND account_id = ? AND livemode = ?",
                    (
                        meter.display_name,
                        meter.status,
                        meter.deactivated_at,
                        meter.updated,
                        meter.id,
                        meter.account_id,
                        meter.livemode,
                    ),
                )

        await self._run(run)

    async def list_meters(
        self, scope: Scope, page: PageRequest, status: MeterStatus | None
    ) -> Page[Meter]:
        def run() -> Page[Meter]:
            assert self._conn is not None
            where = "account_id = ? AND livemode = ?"
            args: list[Any] = [scope.account_id, scope.livemode]
            if status is not None:
                where += " AND status = ?"
                args.append(status)
            rows = keyset_page(self._conn, "meters", METER_COLUMNS, where, args, scope, page)
            meters = [meter_from_row(row) for row in rows]
            has_more = len(meters) > page.limit
            meters = meters[: page.limit]
            if page.ending_before is not None:
                meters.reverse()
            return Page(items=meters, has_more=has_more)

        return await self._run(run)

    # products and plans ---------------------------------------------------------------

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            assert self._conn is not None, "store is closed"
            return fn(self._conn, *args)

        return await self._run(run)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            with self._tx() as conn:
                return fn(conn, *args)

        return await self._run(run)

    async def insert_product(self, product: Product) -> None:
        await self._write(billing.insert_product, product)

    async def get_product(self, scope: Scope, product_id: str) -> Product | None:
        return await self._read(billing.get_product, scope, product_id)

    async def get_products(self, scope: Scope, product_ids: Sequence[str]) -> dict[str, Product]:
        return await self._read(billing.get_products, scope, product_ids)

    async def save_product(self, product: Product) -> None:
        await self._write(billing.save_product, product)

    async def delete_product(self, scope: Scope, product_id: str) -> bool:
        return await self._write(billing.delete_product, scope, product_id)

    async def list_products(
        self, scope: Scope, page: PageRequest, where: ProductFilter
    ) -> Page[Product]:
        return await self._read(billing.list_products, scope, page, where)

    async def insert_plan(self, plan: Plan, new_product: Product | None = None) -> None:
        await self._write(billing.insert_plan, plan, new_product)

    async def get_plan(self, scope: Scope, plan_id: str) -> Plan | None:
        return await self._read(billing.get_plan, scope, plan_id)

    async def save_plan(self, plan: Plan) -> None:
        await self._write(billing.save_plan, plan)

    async def delete_plan(self, scope: Scope, plan_id: str) -> bool:
        return await self._write(billing.delete_plan, scope, plan_id)

    async def list_plans(self, scope: Scope, page: PageRequest, where: PlanFilter) -> Page[Plan]:
        return await self._read(billing.list_plans, scope, page, where)

    # events, rollups and error reports ---------------------------------------------------

    async def transact(self, work: Callable[[EventTransaction], T]) -> T:
        def run() -> T:
            with self._tx() as conn:
                tx = SQLiteEventTransaction(conn, self._identifiers)
                result = work(tx)
            self._identifiers.take(tx)
            return result

        return await self._run(run)

    async def transact_each(
        self,
        take: Callable[[], W | None],
        work: Callable[[EventTransaction, W], T],
        done: Callable[[W, T | None, BaseException | None], None],
    ) -> None:
        def run() -> None:
            while (unit := take()) is not None:
                try:
                    with self._tx() as conn:
                        tx = SQLiteEventTransaction(conn, self._identifiers)
                        result = work(tx, unit)
                except Exception as exc:
                    done(unit, None, exc)
                    continue
                self._identifiers.take(tx)
                done(unit, result, None)

        await self._run(run)

    def _meter_seq(self, meter: Meter) -> int:
        seq = self._meter_seqs.get(meter.id)
        if seq is None:
            assert self._conn is not None
            row = self._conn.execute("SELECT seq FROM meters WHERE id = ?", (meter.id,)).fetchone()
            seq = self._meter_seqs[meter.id] = int(row[0])
        return seq

    async def read_rollups(
        self, meter: Meter, customer: str, spans: Sequence[tuple[int, int, int]]
    ) -> list[tuple[int, int, Rollup]]:
        def run() -> list[tuple[int, int, Rollup]]:
            assert self._conn is not None
            meter_seq = self._meter_seq(meter)
            found: list[tuple[int, int, Rollup]] = []
            for size, first, end in spans:
                rows = self._conn.execute(
                    "SELECT bucket, event_count, total, latest_ts, latest_seq, latest_value "
                    "FROM meter_rollups WHERE meter_seq = ? AND customer = ? AND size = ? "
                    "AND bucket >= ? AND bucket < ?",
                    (meter_seq, customer, size, first, end),
                ).fetchall()
                found.extend((size, row[0], rollup_from_row(row[1:])) for row in rows)
            return found

        return await self._run(run)

    async def list_error_reports(
        self, scope: Scope, limit: int, after: str | None, where: ReportFilter
    ) -> Page[ErrorReport]:
        def run() -> Page[ErrorReport]:
            assert self._conn is not None
            sql = "account_id = ? AND livemode = ?"
            args: list[Any] = [scope.account_id, scope.livemode]
            if where.object_id is not None:
                sql += " AND meter_id = ?"
                args.append(where.object_id)
            if where.types:
                sql += f" AND type IN ({', '.join('?' * len(where.types))})"
                args.extend(where.types)
            if where.created_after is not None:
                sql += " AND created >= ?"
                args.append(where.created_after)
            if where.created_before is not None:
                sql += " AND created <= ?"
                args.append(where.created_before)
            if after is not None:
                row = self._conn.execute(
                    "SELECT seq FROM error_reports WHERE id = ? AND account_id = ? "
                    "AND livemode = ?",
                    (after, scope.account_id, scope.livemode),
                ).fetchone()
                if row is None:
                    raise CursorNotFound("page", after)
                sql += " AND seq < ?"
                args.append(row[0])
            rows = self._conn.execute(
                f"SELECT {REPORT_COLUMNS} FROM error_reports WHERE {sql} ORDER BY seq DESC LIMIT ?",
                [*args, limit + 1],
            ).fetchall()
            reports = [report_from_row(row) for row in rows]
            return Page(items=reports[:limit], has_more=len(reports) > limit)

        return await self._run(run)

    async def get_error_report(self, scope: Scope, report_id: str) -> ErrorReport | None:
        def run() -> ErrorReport | None:
            assert self._conn is not None
            row = self._conn.execute(
                f"SELECT {REPORT_COLUMNS} FROM error_reports "
                "WHERE id = ? AND account_id = ? AND livemode = ?",
                (report_id, scope.account_id, scope.livemode),
            ).fetchone()
            return report_from_row(row) if row else None

        return await self._run(run)

    async def prune_event_identifiers(self, before: int) -> int:
        """Forget identifiers received at or before ``before``, oldest first.

        The log and the raw events are in arrival order, so this reads only what it forgets. A
        record that arrived out of order behind a newer one waits for the next prune; lookups
        check the age of what they find anyway.
        """

        def run() -> int:
            with self._tx() as conn:
                row = conn.execute(
                    "SELECT seq FROM event_identifier_log WHERE received > ? ORDER BY seq LIMIT 1",
                    (before,),
                ).fetchone()
                if row is None:
                    row = conn.execute(
                        "SELECT coalesce(max(seq), 0) + 1 FROM event_identifier_log"
                    ).fetchone()
                bound = int(row[0])
                deleted = conn.execute(
                    "DELETE FROM event_identifier_log WHERE seq < ?", (bound,)
                ).rowcount
            self._identifiers.uncounted.drop_below(bound)
            first = self._first_event_since(before - ARRIVAL_ORDER_MARGIN_SECONDS)
            return int(deleted) + self._identifiers.counted.drop_below(first)

        return await self._run(run)

    # meter event sessions --------------------------------------------------------------

    async def insert_session(self, session: MeterEventSession) -> None:
        def run() -> None:
            with self._tx() as conn:
                conn.execute(
                    f"INSERT INTO meter_event_sessions ({_SESSION_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        session.id,
                        session.account_id,
                        session.livemode,
                        session.token_hash,
                        session.created,
                        session.expires_at,
                    ),
                )

        await self._run(run)

    async def find_session(self, token_hash: str) -> MeterEventSession | None:
        def run() -> MeterEventSession | None:
            assert self._conn is not None
            row = self._conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM meter_event_sessions WHERE token_hash = ?",
                (token_hash,),
            ).fetchone()
            if row is None:
                return None
            return MeterEventSession(
                id=row[0],
                account_id=row[1],
                livemode=bool(row[2]),
                token_hash=row[3],
                created=row[4],
                expires_at=row[5],
            )

        return await self._run(run)

    async def prune_sessions(self, expired_before: int) -> int:
        def run() -> int:
            with self._tx() as conn:
                return conn.execute(
                    "DELETE FROM meter_event_sessions WHERE expires_at <= ?", (expired_before,)
                ).rowcount

        return await self._run(run)

    # idempotency -----------------------------------------------------------------------

    async def claim_idempotency_key(
        self, scope: Scope, key: str, fingerprint: str, now: int
    ) -> IdempotentResponse | None:
        def run() -> IdempotentResponse | None:
            with self._tx() as conn:
                ident = (scope.account_id, scope.livemode, key)
                row = conn.execute(
                    "SELECT fingerprint, created, status, body FROM idempotency_keys "
                    "WHERE account_id = ? AND livemode = ? AND key = ?",
                    ident,
                ).fetchone()
                if row is not None and row[1] > now - IDEMPOTENCY_TTL_SECONDS:
                    return IdempotentResponse(
                        fingerprint=row[0], created=row[1], status=row[2], body=row[3]
                    )
                conn.execute(
                    "INSERT OR REPLACE INTO idempotency_keys "
                    "(account_id, livemode, key, fingerprint, created) VALUES (?, ?, ?, ?, ?)",
                    (*ident, fingerprint, now),
                )
                return None

        return await self._run(run)

    async def complete_idempotency_key(
        self, scope: Scope, key: str, status: int, body: bytes
    ) -> None:
        def run() -> None:
            with self._tx() as conn:
                conn.execute(
                    "UPDATE idempotency_keys SET status = ?, body = ? "
                    "WHERE account_id = ? AND livemode = ? AND key = ?",
                    (status, body, scope.account_id, scope.livemode, key),
                )

        await self._run(run)

    async def release_idempotency_key(self, scope: Scope, key: str) -> None:
        def run() -> None:
            with self._tx() as conn:
                conn.execute(
                    "DELETE FROM idempotency_keys "
                    "WHERE account_id = ? AND livemode = ? AND key = ? AND status IS NULL",
                    (scope.account_id, scope.livemode, key),
                )

        await self._run(run)

    async def prune_idempotency_keys(self, now: int) -> int:
        def run() -> int:
            with self._tx() as conn:
                cursor = conn.execute(
                    "DELETE FROM idempotency_keys WHERE created <= ?",
                    (now - IDEMPOTENCY_TTL_SECONDS,),
                )
                return cursor.rowcount

        return await self._run(run)

    async def release_unfinished_idempotency_keys(self) -> int:
        """On start: requests that were in flight when the last process died never answered."""

        def run() -> int:
            with self._tx() as conn:
                return conn.execute("DELETE FROM idempotency_keys WHERE status IS NULL").rowcount

        return await self._run(run)


def _insert_key(conn: sqlite3.Connection, key: ApiKey) -> None:
    conn.execute(
        f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            key.id,
            key.account_id,
            key.livemode,
            key.secret_hash,
            key.last4,
            key.created,
            key.revoked_at,
        ),
    )


def _key_from_row(row: Any) -> ApiKey:
    return ApiKey(
        id=row[0],
        account_id=row[1],
        livemode=bool(row[2]),
        secret_hash=row[3],
        last4=row[4],
        created=row[5],
        revoked_at=row[6],
    )


def _meter_row(meter: Meter) -> tuple[Any, ...]:
    return (
        meter.id,
        meter.account_id,
        meter.livemode,
        meter.display_name,
        meter.event_name,
        meter.formula,
        meter.customer_key,
        meter.value_key,
        meter.event_time_window,
        meter.status,
        meter.deactivated_at,
        meter.created,
        meter.updated,
    )
