"""What both SQL stores share: every Store method whose SQL SQLite and PostgreSQL both speak.

A backend says how to run work (:meth:`SQLStore._run`), how to reach a connection outside and
inside a transaction (:meth:`_connection`, :meth:`_tx`), and how events are written
(:meth:`_event_transaction`); everything else is written once, with ``?`` placeholders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from meterd.billing.plans import Plan
from meterd.billing.products import Product
from meterd.keys import Account, ApiKey
from meterd.metering.error_reports import ErrorReport
from meterd.metering.meters import Meter, MeterStatus
from meterd.metering.rollups import Rollup
from meterd.metering.sessions import MeterEventSession
from meterd.scope import Scope
from meterd.storage import sql_billing as billing
from meterd.storage import sql_rows
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
)
from meterd.storage.sql_errors import INTEGRITY_ERRORS
from meterd.storage.sql_pages import Connection, keyset_page, page_of
from meterd.storage.sql_rows import METER_COLUMNS, REPORT_COLUMNS

T = TypeVar("T")
W = TypeVar("W")

_KEY_COLUMNS = "id, account_id, livemode, secret_hash, last4, created, revoked_at"
_SESSION_COLUMNS = "id, account_id, livemode, token_hash, created, expires_at"
_SCOPED = "account_id = ? AND livemode = ?"


class SQLStore(ABC):
    """:class:`meterd.storage.base.Store`, less what differs between databases (the abstract
    methods, which :class:`SQLiteStore` and :class:`PostgresStore` implement)."""

    def __init__(self) -> None:
        self._meter_seqs: dict[str, int] = {}

    # what a backend provides -------------------------------------------------------------

    @abstractmethod
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking database work off the event loop."""

    @abstractmethod
    def _connection(self) -> AbstractContextManager[Connection]:
        """A connection for reads, outside any write transaction."""

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Connection]:
        """A connection inside a write transaction, committed on exit (rolled back on error)."""

    @abstractmethod
    def _event_transaction(self, conn: Any) -> EventTransaction:
        """The backend's event transaction over ``conn``, inside :meth:`_tx`."""

    def _committed(self, tx: EventTransaction) -> None:
        """After an event transaction committed (SQLite indexes its identifiers); optional."""
        return None

    async def maintain(self, now: int) -> None:
        """Periodic upkeep; optional (PostgreSQL adds event partitions)."""
        return None

    # helpers -----------------------------------------------------------------------------

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            with self._connection() as conn:
                return fn(conn, *args)

        return await self._run(run)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            with self._tx() as conn:
                return fn(conn, *args)

        return await self._run(run)

    # accounts and keys -------------------------------------------------------------------

    async def create_account(self, account: Account, key: ApiKey) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO accounts (id, created) VALUES (?, ?)", (account.id, account.created)
            )
            _insert_key(conn, key)

        await self._write(run)

    async def has_accounts(self) -> bool:
        return await self.first_account() is not None

    async def first_account(self) -> Account | None:
        def run(conn: Connection) -> Account | None:
            row = conn.execute(
                "SELECT id, created FROM accounts ORDER BY created, id LIMIT 1"
            ).fetchone()
            return Account(id=row[0], created=row[1]) if row else None

        return await self._read(run)

    async def add_api_key(self, key: ApiKey) -> None:
        await self._write(_insert_key, key)

    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        return await self._read(find_api_key, secret_hash)

    async def list_api_keys(self) -> list[ApiKey]:
        def run(conn: Connection) -> list[ApiKey]:
            rows = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created, id")
            return [_key_from_row(row) for row in rows.fetchall()]

        return await self._read(run)

    async def revoke_api_key(
        self, key_id: str, now: int, replacement: ApiKey | None = None
    ) -> bool:
        def run(conn: Connection) -> bool:
            revoked = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, key_id),
            ).rowcount
            if revoked and replacement is not None:
                _insert_key(conn, replacement)
            return bool(revoked)

        return await self._write(run)

    # meters ------------------------------------------------------------------------------

    async def insert_meter(self, meter: Meter) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                f"INSERT INTO meters ({METER_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _meter_row(meter),
            )

        try:
            await self._write(run)
        except INTEGRITY_ERRORS as exc:
            if "event_name" in str(exc):
                raise AlreadyExists("event_name") from None
            raise

    async def get_meter(self, scope: Scope, meter_id: str) -> Meter | None:
        def run(conn: Connection) -> Meter | None:
            row = conn.execute(
                f"SELECT {METER_COLUMNS} FROM meters WHERE id = ? AND {_SCOPED}",
                (meter_id, scope.account_id, scope.livemode),
            ).fetchone()
            return sql_rows.meter_from_row(row) if row else None

        return await self._read(run)

    async def find_meter_by_event_name(
        self, scope: Scope, event_name: str
    ) -> tuple[Meter, int] | None:
        return await self._read(meter_by_event_name, scope, event_name)

    async def save_meter(self, meter: Meter) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                "UPDATE meters SET display_name = ?, status = ?, deactivated_at = ?, "
                f"updated = ? WHERE id = ? AND {_SCOPED}",
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

        await self._write(run)

    async def list_meters(
        self, scope: Scope, page: PageRequest, status: MeterStatus | None
    ) -> Page[Meter]:
        def run(conn: Connection) -> Page[Meter]:
            where = _SCOPED
            args: list[Any] = [scope.account_id, scope.livemode]
            if status is not None:
                where += " AND status = ?"
                args.append(status)
            rows = keyset_page(conn, "meters", METER_COLUMNS, where, args, scope, page)
            return page_of(rows, page, sql_rows.meter_from_row)

        return await self._read(run)

    # products and plans ------------------------------------------------------------------

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
                tx = self._event_transaction(conn)
                result = work(tx)
            self._committed(tx)
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
                        tx = self._event_transaction(conn)
                        result = work(tx, unit)
                except Exception as exc:
                    done(unit, None, exc)
                    continue
                self._committed(tx)
                done(unit, result, None)

        await self._run(run)

    def _meter_seq(self, conn: Connection, meter: Meter) -> int:
        seq = self._meter_seqs.get(meter.id)
        if seq is None:
            row = conn.execute("SELECT seq FROM meters WHERE id = ?", (meter.id,)).fetchone()
            seq = self._meter_seqs[meter.id] = int(row[0])
        return seq

    async def read_rollups(
        self, meter: Meter, customer: str, spans: Sequence[tuple[int, int, int]]
    ) -> list[tuple[int, int, Rollup]]:
        return await self._read(self._rollup_rows, meter, customer, spans)

    def _rollup_rows(
        self, conn: Connection, meter: Meter, customer: str, spans: Sequence[tuple[int, int, int]]
    ) -> list[tuple[int, int, Rollup]]:
        meter_seq = self._meter_seq(conn, meter)
        found: list[tuple[int, int, Rollup]] = []
        for size, first, end in spans:
            rows = conn.execute(
                "SELECT bucket, event_count, total, latest_ts, latest_seq, latest_value "
                "FROM meter_rollups WHERE meter_seq = ? AND customer = ? AND size = ? "
                "AND bucket >= ? AND bucket < ?",
                (meter_seq, customer, size, first, end),
            ).fetchall()
            found.extend((size, row[0], sql_rows.rollup_from_row(row[1:])) for row in rows)
        return found

    async def list_error_reports(
        self, scope: Scope, limit: int, after: str | None, where: ReportFilter
    ) -> Page[ErrorReport]:
        def run(conn: Connection) -> Page[ErrorReport]:
            sql = _SCOPED
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
                row = conn.execute(
                    f"SELECT seq FROM error_reports WHERE id = ? AND {_SCOPED}",
                    (after, scope.account_id, scope.livemode),
                ).fetchone()
                if row is None:
                    raise CursorNotFound("page", after)
                sql += " AND seq < ?"
                args.append(row[0])
            rows = conn.execute(
                f"SELECT {REPORT_COLUMNS} FROM error_reports WHERE {sql} ORDER BY seq DESC LIMIT ?",
                [*args, limit + 1],
            ).fetchall()
            reports = [sql_rows.report_from_row(row) for row in rows]
            return Page(items=reports[:limit], has_more=len(reports) > limit)

        return await self._read(run)

    async def get_error_report(self, scope: Scope, report_id: str) -> ErrorReport | None:
        def run(conn: Connection) -> ErrorReport | None:
            row = conn.execute(
                f"SELECT {REPORT_COLUMNS} FROM error_reports WHERE id = ? AND {_SCOPED}",
                (report_id, scope.account_id, scope.livemode),
            ).fetchone()
            return sql_rows.report_from_row(row) if row else None

        return await self._read(run)

    # meter event sessions ----------------------------------------------------------------

    async def insert_session(self, session: MeterEventSession) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                f"INSERT INTO meter_event_sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    session.account_id,
                    session.livemode,
                    session.token_hash,
                    session.created,
                    session.expires_at,
                ),
            )

        await self._write(run)

    async def find_session(self, token_hash: str) -> MeterEventSession | None:
        def run(conn: Connection) -> MeterEventSession | None:
            row = conn.execute(
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

        return await self._read(run)

    async def prune_sessions(self, expired_before: int) -> int:
        def run(conn: Connection) -> int:
            return conn.execute(
                "DELETE FROM meter_event_sessions WHERE expires_at <= ?", (expired_before,)
            ).rowcount

        return await self._write(run)

    # idempotency -------------------------------------------------------------------------

    async def claim_idempotency_key(
        self, scope: Scope, key: str, fingerprint: str, now: int
    ) -> IdempotentResponse | None:
        """One INSERT decides who owns the key, so that two processes (or requests) racing for
        it cannot both run: a new key, or one whose record expired, is taken over; otherwise
        the record that holds it is returned."""

        def run(conn: Connection) -> IdempotentResponse | None:
            ident = (scope.account_id, scope.livemode, key)
            claimed = conn.execute(
                "INSERT INTO idempotency_keys "
                "(account_id, livemode, key, fingerprint, created) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (account_id, livemode, key) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, created = excluded.created, "
                "status = NULL, body = NULL WHERE idempotency_keys.created <= ? "
                "RETURNING created",
                (*ident, fingerprint, now, now - IDEMPOTENCY_TTL_SECONDS),
            ).fetchone()
            if claimed is not None:
                return None
            row = conn.execute(
                f"SELECT fingerprint, created, status, body FROM idempotency_keys "
                f"WHERE {_SCOPED} AND key = ?",
                ident,
            ).fetchone()
            return IdempotentResponse(
                fingerprint=row[0], created=row[1], status=row[2], body=_bytes(row[3])
            )

        return await self._write(run)

    async def complete_idempotency_key(
        self, scope: Scope, key: str, status: int, body: bytes
    ) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                f"UPDATE idempotency_keys SET status = ?, body = ? WHERE {_SCOPED} AND key = ?",
                (status, body, scope.account_id, scope.livemode, key),
            )

        await self._write(run)

    async def release_idempotency_key(self, scope: Scope, key: str) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                f"DELETE FROM idempotency_keys WHERE {_SCOPED} AND key = ? AND status IS NULL",
                (scope.account_id, scope.livemode, key),
            )

        await self._write(run)

    async def prune_idempotency_keys(self, now: int) -> int:
        def run(conn: Connection) -> int:
            return conn.execute(
                "DELETE FROM idempotency_keys WHERE created <= ?", (now - IDEMPOTENCY_TTL_SECONDS,)
            ).rowcount

        return await self._write(run)

    async def release_unfinished_idempotency_keys(self) -> int:
        """On start: requests that were in flight when the last process died never answered.

        Only safe while no other process serves the same database; the PostgreSQL store, which
        several processes share, leaves unfinished claims to expire instead."""

        def run(conn: Connection) -> int:
            return conn.execute("DELETE FROM idempotency_keys WHERE status IS NULL").rowcount

        return await self._write(run)


def meter_by_event_name(
    conn: Connection, scope: Scope, event_name: str
) -> tuple[Meter, int] | None:
    row = conn.execute(
        f"SELECT seq, {METER_COLUMNS} FROM meters WHERE {_SCOPED} AND event_name = ?",
        (scope.account_id, scope.livemode, event_name),
    ).fetchone()
    return (sql_rows.meter_from_row(row[1:]), row[0]) if row else None


def find_api_key(conn: Connection, secret_hash: str) -> ApiKey | None:
    row = conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?", (secret_hash,)
    ).fetchone()
    return _key_from_row(row) if row else None


def prune_identifier_log(conn: Connection, before: int) -> tuple[int, int]:
    """Delete the identifier log's records received at or before ``before``, oldest first:
    the log is in arrival order (give or take a commit), so this reads only what it forgets; a
    record behind a newer one waits for the next prune, and lookups check ages anyway.
    Returns (the first sequence number kept, records deleted)."""
    row = conn.execute(
        "SELECT seq FROM event_identifier_log WHERE received > ? ORDER BY seq LIMIT 1",
        (before,),
    ).fetchone()
    if row is None:
        row = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM event_identifier_log").fetchone()
    bound = int(row[0])
    deleted = conn.execute("DELETE FROM event_identifier_log WHERE seq < ?", (bound,)).rowcount
    return bound, int(deleted)


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _insert_key(conn: Connection, key: ApiKey) -> None:
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
